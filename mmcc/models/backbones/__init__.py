from .ibn_resnet import IBN, IBNBottleneck, IBNResNet

__all__ = ['IBN', 'IBNBottleneck', 'IBNResNet']
