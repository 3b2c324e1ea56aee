# Mask2Former for COCO instance segmentation: the panoptic model with 80 thing classes, no stuff
# and no semantic-map padding.
_base_ = './mask2former_panoptic.py'

batch_pad_size = (1024, 1024)
num_things_classes = 80
num_stuff_classes = 0
num_classes = num_things_classes + num_stuff_classes
model = dict(
    data_preprocessor=dict(
        pad_seg=False,
        batch_augments=[
            dict(type='BatchFixedSizePad', size=batch_pad_size, img_pad_value=0, pad_mask=True,
                 mask_pad_value=0, pad_seg=False)
        ]),
    panoptic_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=False))
