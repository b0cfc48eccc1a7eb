"""OpenMMLab registry glue (the only place importing mmengine/mmseg)."""
