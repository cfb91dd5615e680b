import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from mmcc.registry import HOOKS


@HOOKS.register_module()
class RankedListHook(Hook):
    """Draw the ranked lists of the first queries of a test run.

    ``tools/test.py --show-dir DIR`` adds it; a config may list it in
    ``custom_hooks`` (``dict(type='RankedListHook', out_dir=DIR)``), so
    other tools' test runs draw them too.

    Before testing, the ReIDMetric is told to keep its distances and image
    paths (``keep_ranking``); after the test epoch - the metric has ranked,
    and the runner has not yet closed the visualizer's backends - the main
    process draws the lists through the runner's ReIDVisualizer.
    """
    priority = 'LOW'

    def __init__(self, out_dir: str, num: int = 20, topk: int = 10):
        self.out_dir, self.num, self.topk = out_dir, num, topk
        self.metric, self.files = None, []

    def before_test(self, runner):
        from mmcc.evaluation.metrics import ReIDMetric
        from mmcc.visualization import ReIDVisualizer
        if not isinstance(runner.visualizer, ReIDVisualizer):
            raise TypeError(
                '--show-dir draws with an mmcc ReIDVisualizer; the config '
                f'builds a {type(runner.visualizer).__name__} (set '
                "visualizer.type='ReIDVisualizer')")
        metrics = [
            m for m in runner.test_loop.evaluator.metrics
            if isinstance(m, ReIDMetric)
        ]
        if not metrics:
            raise ValueError('--show-dir needs a ReIDMetric in '
                             'test_evaluator')
        self.metric = metrics[0]
        self.metric.keep_ranking = True

    def after_test_epoch(self, runner, metrics=None):
        if is_main_process():
            self.files = show_ranked_lists(runner.visualizer,
                                           self.metric.last_ranking,
                                           self.out_dir, self.num, self.topk)


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
