import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from mmcc.registry import HOOKS


@HOOKS.register_module()
class RankedListHook(Hook):
    """Draw the ranked lists of the first queries of a test run, or of a
    training run's last validation.

    ``tools/test.py --show-dir DIR`` adds it; a config may list it in
    ``custom_hooks`` (``dict(type='RankedListHook', out_dir=DIR)``), so
    other tools' test runs draw them too. With ``when='last_val'`` it
    draws instead at the end of training, from the validation of the
    trained model, so that no second process re-embeds the same images.

    Before the evaluation, the ReIDMetric is told to keep its distances and
    image paths (``keep_ranking``); after it - the metric has ranked, and
    the runner has not yet closed the visualizer's backends - the main
    process draws the lists through the runner's ReIDVisualizer.

    Args:
        out_dir (str, optional): Folder of the PNGs. Default:
            ``WORK_DIR/ranked_lists``.
        num (int): Queries drawn, the first of the query set.
        topk (int): Gallery images a list shows.
        when (str): ``'test'`` (a test run) or ``'last_val'`` (the
            validation after the last training iteration).
    """
    priority = 'LOW'

    def __init__(self,
                 out_dir: Optional[str] = None,
                 num: int = 20,
                 topk: int = 10,
                 when: str = 'test'):
        if when not in ('test', 'last_val'):
            raise ValueError(
                f"RankedListHook: when must be 'test' or 'last_val', "
                f'not {when!r}')
        self.out_dir, self.num, self.topk = out_dir, num, topk
        self.when = when
        self.metric, self.files = None, []

    def _keep_ranking(self, runner, evaluator, what):
        from mmcc.evaluation.metrics import ReIDMetric
        from mmcc.visualization import ReIDVisualizer
        if not isinstance(runner.visualizer, ReIDVisualizer):
            raise TypeError(
                'RankedListHook draws with an mmcc ReIDVisualizer; the '
                f'config builds a {type(runner.visualizer).__name__} (set '
                "visualizer.type='ReIDVisualizer')")
        metrics = [m for m in evaluator.metrics if isinstance(m, ReIDMetric)]
        if not metrics:
            raise ValueError(f'RankedListHook needs a ReIDMetric in {what}')
        self.metric = metrics[0]
        self.metric.keep_ranking = True

    def _draw(self, runner):
        if is_main_process():
            out_dir = self.out_dir or osp.join(runner.work_dir, 'ranked_lists')
            self.files = show_ranked_lists(runner.visualizer,
                                           self.metric.last_ranking, out_dir,
                                           self.num, self.topk)

    @staticmethod
    def _is_last_val(runner) -> bool:
        # a val-only run has no train loop (and reading max_iters would
        # build one); the train loop counts the iteration before it
        # validates, and a validation before training (ValBeforeTrainHook)
        # is at iteration 0
        loop = runner._train_loop
        if loop is None or isinstance(loop, dict):
            return False
        return runner.iter >= loop.max_iters > 0

    def before_test(self, runner):
        if self.when == 'test':
            self._keep_ranking(runner, runner.test_loop.evaluator,
                               'test_evaluator')

    def after_test_epoch(self, runner, metrics=None):
        if self.when == 'test':
            self._draw(runner)

    def before_val_epoch(self, runner):
        if self.when == 'last_val' and self._is_last_val(runner):
            self._keep_ranking(runner, runner.val_loop.evaluator,
                               'val_evaluator')

    def after_val_epoch(self, runner, metrics=None):
        if self.when == 'last_val' and self._is_last_val(runner):
            self._draw(runner)


def show_ranked_lists(visualizer, ranking, out_dir, num, topk):
    """Draw the ranked lists of the first ``num`` queries into ``out_dir``.

    Returns:
        list[str]: The PNG files written.
    """
    from mmcc.evaluation.functional import ranked_lists
    num = min(num, len(ranking['query_paths']))
    lists = ranked_lists(
        ranking['distmat'],
        ranking['query_ids'],
        ranking['gallery_ids'],
        ranking['query_cams'],
        ranking['gallery_cams'],
        topk=topk,
        queries=range(num))
    files = []
    for index, ranked in enumerate(lists):
        query = ranking['query_paths'][index]
        name = osp.splitext(osp.basename(query))[0]
        files.append(osp.join(out_dir, f'{index:04d}_{name}.png'))
        visualizer.add_ranked_list(
            'ranked_list',
            query, [ranking['gallery_paths'][i] for i in ranked.indices],
            ranked.matches,
            ranked.distances,
            step=index,
            out_file=files[-1])
    return files
