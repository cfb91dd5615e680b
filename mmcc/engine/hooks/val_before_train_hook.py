from mmengine.hooks import Hook

from mmcc.registry import HOOKS


@HOOKS.register_module()
class ValBeforeTrainHook(Hook):
    """Validate the initial model once, before the first training epoch.

    Unsupervised re-ID starts from a model that already ranks (ImageNet
    weights): its mAP is the baseline a run is judged against, and the
    epoch-0 point of the accuracy curve. The validation runs through the
    runner's own ``val_loop``, so its metrics are logged (at epoch or
    iteration 0) like every later validation, in the same process and with
    the data already on hand - no separate ``tools/test.py`` run.

    A resumed run (``runner.iter > 0``) is not validated again. Priority
    ``LOWEST``: every other ``before_train`` (weights loaded, buffers set
    up) has run. The only random number validating draws is its data
    loader's base seed, from torch's global generator; mmengine reseeds
    every loader worker from the config's seed, so a model that draws no
    random numbers in the main process (no dropout: the re-ID models here)
    trains to the same weights with or without this hook (tested).
    """

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        if runner.iter > 0:
            return
        if runner.val_loop is None:
            runner.logger.warning(
                'ValBeforeTrainHook: the config has no val_dataloader / '
                'val_cfg / val_evaluator; nothing to validate')
            return
        runner.val_loop.run()
