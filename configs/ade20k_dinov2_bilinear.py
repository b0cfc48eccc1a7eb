# The bilinear-upsampling baseline of ade20k_dinov2_anyup.py: one line differs.
_base_ = ['./ade20k_dinov2_anyup.py']
model = dict(neck=dict(_delete_=True, type='BilinearNeck', in_index=-1, out_strides=(1,)))
