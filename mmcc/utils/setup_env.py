import datetime
import warnings

from mmengine import DefaultScope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every mmcc module so that all registries are filled.

    Args:
        init_default_scope (bool): Also make ``mmcc`` the default scope, so
            that registries build from mmcc's nodes first. Defaults to True.
    """
    import mmcc.datasets  # noqa: F401
    import mmcc.engine  # noqa: F401
    import mmcc.evaluation  # noqa: F401
    import mmcc.models  # noqa: F401

    if not init_default_scope:
        return
    current = DefaultScope.get_current_instance()
    if current is None:
        DefaultScope.get_instance('mmcc', scope_name='mmcc')
    elif current.scope_name != 'mmcc':
        warnings.warn(f'The current default scope "{current.scope_name}" is '
                      'not "mmcc"; register_all_modules switches it to '
                      '"mmcc". Pass init_default_scope=False to avoid this.')
        # a fresh instance name: DefaultScope instances are global singletons
        DefaultScope.get_instance(
            f'mmcc-{datetime.datetime.now()}', scope_name='mmcc')
