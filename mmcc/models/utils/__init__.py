from .checkpoint_convert import (CheckpointKeyError, backbone_state_dict,
                                 convert_mobilenetv2,
                                 convert_torchvision_resnet,
                                 detect_mobilenetv2_layout, extract_state_dict,
                                 infer_resnet_depth,
                                 mobilenetv2_to_torchvision)

__all__ = [
    'CheckpointKeyError', 'backbone_state_dict', 'convert_mobilenetv2',
    'convert_torchvision_resnet', 'detect_mobilenetv2_layout',
    'extract_state_dict', 'infer_resnet_depth', 'mobilenetv2_to_torchvision'
]
