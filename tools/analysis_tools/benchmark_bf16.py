"""bfloat16 against float32 on this CPU: the matrix product of the kNN
screen and a MobileNetV2 training step under ``--amp``'s autocast.

Prints each bfloat16 time as a ratio of the float32 time measured in the
same run (above 1: bfloat16 is slower), and the CPU's bfloat16 flags::

    python tools/analysis_tools/benchmark_bf16.py [--repeats 5]

``--amp`` refuses CPUs without native bfloat16 and the kNN search screens in
bfloat16 only on CPUs that have it; this measures why.
"""
import argparse
import time

import torch


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_times(repeats: int):
    x = torch.nn.functional.normalize(torch.randn(8192, 2048), dim=1)
    xb = x.bfloat16()
    return (best_time(lambda: x @ x[:4096].t(),
                      repeats), best_time(lambda: xb @ xb[:4096].t(), repeats))


def train_step_times(repeats: int):
    from mmpretrain.models import MobileNetV2
    torch.manual_seed(0)
    model = MobileNetV2(out_indices=(7, ))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(32, 3, 256, 128)

    def step(autocast: bool):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            loss = model(images)[-1].float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return (best_time(lambda: step(False),
                      repeats), best_time(lambda: step(True), repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    from mmcc.utils import cpu_has_native_bf16
    from mmcc.utils.host import cpu_vector_flags
    print(f'CPU: {cpu_vector_flags()}; native bfloat16: '
          f'{cpu_has_native_bf16()}; threads: {torch.get_num_threads()}')
    f32, bf16 = matmul_times(args.repeats)
    print(f'8192 x 2048 by 2048 x 4096 product: float32 {f32 * 1e3:.0f} ms,'
          f' bfloat16 {bf16 * 1e3:.0f} ms (x{bf16 / f32:.2f})')
    f32, bf16 = train_step_times(args.repeats)
    print(f'MobileNetV2 train step, 32 x 256 x 128: float32 '
          f'{f32 * 1e3:.0f} ms, bfloat16 autocast {bf16 * 1e3:.0f} ms '
          f'(x{bf16 / f32:.2f})')


if __name__ == '__main__':
    main()
