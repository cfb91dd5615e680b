import mmengine.registry as mmengine_registry
from mmengine import DefaultScope

import mmcc.registry as registry
from mmcc.utils import register_all_modules


def test_registries_are_mmcc_children_of_mmengine():
    for name in registry.__all__:
        node = getattr(registry, name)
        assert node.scope == 'mmcc'
        assert node.parent is not None and node.parent.scope == 'mmengine'


def test_register_all_modules_sets_default_scope():
    register_all_modules(init_default_scope=True)
    assert DefaultScope.get_current_instance().scope_name == 'mmcc'


def test_cross_scope_lookup_reaches_mmpretrain_and_mmcv():
    import mmpretrain.models  # noqa: F401
    assert registry.MODELS.get('mmpretrain.ResNet').__name__ == 'ResNet'
    assert registry.TRANSFORMS.get('LoadImageFromFile') is \
        mmengine_registry.TRANSFORMS.get('LoadImageFromFile')
