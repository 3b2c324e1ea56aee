# Relation DETR: ResNet-50 backbone (the paper's / official R50 setting).
_base_ = '../_base_/recipes/relation-detr_12e_coco.py'
