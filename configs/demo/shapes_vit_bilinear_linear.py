# The demo with bilinear upsampling instead of AnyUp: one line differs.
_base_ = ['./shapes_vit_anyup_linear.py']
model = dict(neck=dict(_delete_=True, type='BilinearNeck', in_index=-1, out_strides=(1,)))
