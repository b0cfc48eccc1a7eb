# The procedural demo scenes (tools/generate_demo_data.py) in NYUv2's layout:
#   data/demo/nyu/images/{train,test}/shapes_*.jpg
#   data/demo/nyu/annotations/{train,test}/shapes_*.png   (uint16, millimetres)
_base_ = ['./nyu_448.py']
data_root = 'data/demo/nyu'
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(crop_type=None)
test_evaluator = val_evaluator
