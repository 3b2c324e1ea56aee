from .backbone import ExampleConvNet

__all__ = ['ExampleConvNet']
