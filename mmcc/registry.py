"""Registries of mmcc, one child of MMEngine's root registry per kind.

Every node has scope ``mmcc`` and lists where its modules live, so that a
config with ``default_scope='mmcc'`` builds ``type='ClusterMemoryHead'``
without importing anything by hand. Components of mmpretrain (backbones,
pooling necks, transforms) are reached across scopes with the usual
OpenMMLab prefix, e.g. ``type='mmpretrain.ResNet'``; mmcv's and mmengine's
(``LoadImageFromFile``, ``Resize``, ``Adam``...) resolve through the root.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import \
    WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

__all__ = [
    'RUNNERS', 'LOOPS', 'HOOKS', 'OPTIMIZERS', 'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS',
    'WEIGHT_INITIALIZERS', 'METRICS', 'EVALUATORS', 'VISUALIZERS',
    'VISBACKENDS'
]


def _child(name, parent, locations):
    return Registry(name, parent=parent, scope='mmcc', locations=locations)


# engine
RUNNERS = _child('runner', MMENGINE_RUNNERS, ['mmcc.engine'])
LOOPS = _child('loop', MMENGINE_LOOPS, ['mmcc.engine'])
HOOKS = _child('hook', MMENGINE_HOOKS, ['mmcc.engine'])
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, ['mmcc.engine'])
OPTIM_WRAPPERS = _child('optim_wrapper', MMENGINE_OPTIM_WRAPPERS,
                        ['mmcc.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                    ['mmcc.engine'])
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS,
                          ['mmcc.engine'])
# datasets
DATASETS = _child('dataset', MMENGINE_DATASETS, ['mmcc.datasets'])
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS,
                       ['mmcc.datasets'])
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, ['mmcc.datasets'])
# models
MODELS = _child('model', MMENGINE_MODELS, ['mmcc.models'])
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS,
                        ['mmcc.models'])
WEIGHT_INITIALIZERS = _child('weight initializer',
                             MMENGINE_WEIGHT_INITIALIZERS, ['mmcc.models'])
# evaluation
METRICS = _child('metric', MMENGINE_METRICS, ['mmcc.evaluation'])
EVALUATORS = _child('evaluator', MMENGINE_EVALUATOR, ['mmcc.evaluation'])
# visualisation
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS,
                     ['mmcc.engine', 'mmcc.visualization'])
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS,
                     ['mmcc.engine', 'mmcc.visualization'])
