"""PreciseBatchNorm2d (exact channels-last statistics) and BatchNorm folding
for eval passes."""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope
from torch import nn

from mmcc.models.utils import (FoldedBackboneCache, PreciseBatchNorm2d,
                               batch_norm_stats, convert_precise_batch_norm,
                               fold_batch_norm_copy)
from mmcc.registry import MODELS

CL = torch.channels_last


def _relative_error(value, reference):
    return float((value.double() - reference).norm() / reference.norm())


def _offset_input(shape=(32, 16, 64, 32), seed=0):
    # a large mean against the spread, as conv outputs often have
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator) * 0.5 + 3.0


def test_batch_norm_stats_are_exact_in_both_layouts():
    inputs = _offset_input()
    var64, mean64 = torch.var_mean(
        inputs.double(), dim=(0, 2, 3), unbiased=False)
    for layout in (torch.contiguous_format, CL):
        mean, var = batch_norm_stats(inputs.contiguous(memory_format=layout))
        assert mean.shape == var.shape == (16, )
        assert _relative_error(mean, mean64) < 3e-7
        assert _relative_error(var, var64) < 3e-7


def _bn_pair(num_features, **kwargs):
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(num_features, **kwargs)
    if plain.affine:
        with torch.no_grad():
            plain.weight.uniform_(0.5, 1.5)
            plain.bias.uniform_(-1, 1)
    precise = PreciseBatchNorm2d(num_features, **kwargs)
    precise.load_state_dict(plain.state_dict())
    return plain, precise


def _train_step(module, inputs, grad_outputs):
    inputs = inputs.clone().requires_grad_(True)
    outputs = module(inputs)
    outputs.backward(grad_outputs.to(outputs.dtype))
    grads = [inputs.grad]
    if module.affine:
        grads += [module.weight.grad, module.bias.grad]
    return outputs.detach(), grads


def test_precise_batch_norm_matches_float64_in_channels_last():
    """Output and gradients as exact as the channels-first kernel, where
    torch's channels-last kernel is not (its batch mean is 1e-6 off on
    this input)."""
    inputs = _offset_input()
    grad_outputs = torch.randn(inputs.shape)
    plain, precise = _bn_pair(16)
    exact = copy.deepcopy(plain).double()
    ref_out, ref_grads = _train_step(exact, inputs.double(),
                                     grad_outputs.double())
    first_out, first_grads = _train_step(plain, inputs, grad_outputs)
    out, grads = _train_step(precise, inputs.contiguous(memory_format=CL),
                             grad_outputs.contiguous(memory_format=CL))
    assert out.is_contiguous(memory_format=CL)
    assert grads[0].is_contiguous(memory_format=CL)
    first_error = _relative_error(first_out, ref_out)
    assert _relative_error(out, ref_out) < max(5e-7, 3 * first_error)
    for grad, first_grad, ref_grad in zip(grads, first_grads, ref_grads):
        first_error = _relative_error(first_grad, ref_grad)
        assert _relative_error(grad, ref_grad) < max(1e-5, 3 * first_error)
    # running statistics as nn.BatchNorm2d keeps them (unbiased variance)
    torch.testing.assert_close(precise.running_mean, plain.running_mean)
    torch.testing.assert_close(precise.running_var, plain.running_var)
    assert int(precise.num_batches_tracked) == 1


@pytest.mark.parametrize('momentum', [0.1, None])
def test_precise_batch_norm_running_statistics(momentum):
    plain, precise = _bn_pair(8, momentum=momentum)
    for seed in range(3):
        inputs = _offset_input((4, 8, 6, 5), seed=seed)
        plain(inputs)
        precise(inputs.contiguous(memory_format=CL))
    torch.testing.assert_close(precise.running_mean, plain.running_mean)
    torch.testing.assert_close(precise.running_var, plain.running_var)
    assert int(precise.num_batches_tracked) == 3
    # without running statistics: batch statistics, nothing to update
    plain, precise = _bn_pair(8, track_running_stats=False)
    inputs = _offset_input((4, 8, 6, 5))
    torch.testing.assert_close(
        precise(inputs.contiguous(memory_format=CL)),
        plain(inputs),
        atol=1e-5,
        rtol=1e-5)


def test_precise_batch_norm_is_torch_batch_norm_elsewhere():
    """Eval mode, channels-first, other dtypes: torch's kernel, bit for
    bit."""
    plain, precise = _bn_pair(8)
    last = _offset_input((4, 8, 6, 5)).contiguous(memory_format=CL)
    plain.eval(), precise.eval()
    assert torch.equal(precise(last), plain(last))
    plain.train(), precise.train()
    first = _offset_input((4, 8, 6, 5))
    assert torch.equal(precise(first), plain(first))
    half = last.to(torch.bfloat16)
    assert torch.equal(
        precise.to(torch.bfloat16)(half),
        plain.to(torch.bfloat16)(half))


def test_precise_batch_norm_with_frozen_affine_parameters():
    plain, precise = _bn_pair(8)
    precise.requires_grad_(False)
    plain.requires_grad_(False)
    inputs = _offset_input((4, 8, 6, 5))
    grad_outputs = torch.randn(inputs.shape)
    x_plain = inputs.clone().requires_grad_(True)
    x_precise = inputs.contiguous(memory_format=CL).requires_grad_(True)
    plain(x_plain).backward(grad_outputs)
    precise(x_precise).backward(grad_outputs.contiguous(memory_format=CL))
    assert precise.weight.grad is None
    torch.testing.assert_close(
        x_precise.grad, x_plain.grad, atol=1e-5, rtol=1e-4)


class _Block(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.sync = nn.SyncBatchNorm(8)
        self.layers = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))

    def forward(self, x):
        return self.layers(self.bn(self.conv(x)))


def test_convert_precise_batch_norm_keeps_tensors_and_state():
    block = _Block()
    block.bn.requires_grad_(False)
    block.eval()
    weight, running_mean = block.bn.weight, block.bn.running_mean
    keys = list(block.state_dict())
    converted = convert_precise_batch_norm(block)
    assert converted is block
    assert type(block.bn) is PreciseBatchNorm2d
    assert type(block.layers[1]) is PreciseBatchNorm2d
    assert type(block.sync) is nn.SyncBatchNorm  # subclasses left alone
    # the same tensors: an optimiser built before still updates them
    assert block.bn.weight is weight
    assert block.bn.running_mean is running_mean
    assert not block.bn.weight.requires_grad
    assert not block.bn.training
    assert list(block.state_dict()) == keys
    # a bare BatchNorm2d is replaced, not changed
    bn = nn.BatchNorm2d(4)
    assert type(convert_precise_batch_norm(bn)) is PreciseBatchNorm2d
    assert type(bn) is nn.BatchNorm2d


def _mobilenet_model(**kwargs):
    init_default_scope('mmcc')
    return MODELS.build(
        dict(
            type='ReIDModel',
            backbone=dict(
                type='mmpretrain.MobileNetV2',
                widen_factor=0.25,
                out_indices=(7, )),
            neck=dict(type='BNNeck'),
            probe_size=(64, 32),
            **kwargs))


def test_reid_model_uses_precise_batch_norm_only_in_channels_last():
    fast = _mobilenet_model()
    plain = _mobilenet_model(channels_last=False)
    kinds = [type(m) for m in fast.backbone.modules()]
    assert PreciseBatchNorm2d in kinds and nn.BatchNorm2d not in kinds
    assert PreciseBatchNorm2d not in [type(m) for m in plain.modules()]
    assert list(fast.state_dict()) == list(plain.state_dict())


def _trained_a_little(model, images):
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model(images).pow(2).sum().backward()
    optimiser.step()
    model.eval()


def test_reid_model_evaluates_with_folded_batch_norm():
    torch.manual_seed(0)
    folded = _mobilenet_model()
    unfolded = _mobilenet_model(fold_batch_norm=False)
    unfolded.load_state_dict(folded.state_dict())
    images = torch.randn(6, 3, 64, 32)
    keys = list(folded.state_dict())

    def same_embeddings():
        with torch.no_grad():
            torch.testing.assert_close(
                folded(images), unfolded(images), atol=1e-5, rtol=1e-4)

    for model in (folded, unfolded):
        _trained_a_little(model, images)  # BN statistics away from 0/1
    folded.eval(), unfolded.eval()
    same_embeddings()
    cache = folded._folded_backbone
    first_copy = cache._folded
    assert first_copy is not None  # it did fold
    assert not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm)
        for m in first_copy.modules())
    assert list(folded.state_dict()) == keys  # the copy is not a submodule
    # an optimiser step invalidates the copy
    for model in (folded, unfolded):
        _trained_a_little(model, images)
    same_embeddings()
    assert cache._folded is not first_copy
    # so does loading weights while in eval mode
    torch.manual_seed(1)
    other = _mobilenet_model()
    _trained_a_little(other, images)
    folded.load_state_dict(other.state_dict())
    unfolded.load_state_dict(other.state_dict())
    same_embeddings()
    # training frees it
    folded.train()
    assert cache._folded is None


class _ConvAfterBN(nn.Module):
    """Registers conv before bn but applies bn first: mmcv's fuse_conv_bn
    folds the two the wrong way round (or fails, if their widths differ)."""

    def __init__(self, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_fold_batch_norm_copy_checks_its_result():
    torch.manual_seed(0)
    probe = torch.randn(2, 3, 8, 4)
    for out_channels in (3, 4):
        wrong = _ConvAfterBN(out_channels).eval()
        with torch.no_grad():
            wrong.bn.running_mean.uniform_(-1, 1)
            wrong.bn.running_var.uniform_(0.5, 2)
        assert fold_batch_norm_copy(wrong, probe) is None
    # nothing to fold
    assert fold_batch_norm_copy(nn.Conv2d(3, 4, 1).eval(), probe) is None
    # the cache falls back to the module itself, and never folds a
    # training-mode BatchNorm
    cache = FoldedBackboneCache((8, 4))
    assert cache.get(wrong) is wrong
    block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    assert cache.get(block) is not block
    block[1].train()
    assert cache.get(block) is block


def test_folded_copy_shares_the_backbones_hooks_not_copies():
    block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        block[1].running_mean.uniform_(-1, 1)
    seen = []

    def record(module, inputs, outputs):
        seen.append(outputs.shape[0])

    block.register_forward_hook(record)
    folded = fold_batch_norm_copy(block, torch.randn(2, 3, 8, 4))
    assert folded is not None
    assert seen == []  # the probe comparison ran no hook
    with torch.no_grad():
        folded(torch.randn(5, 3, 8, 4))
    assert seen == [5]  # the eval pass did
    # registered after folding: shared registries
    block.register_forward_hook(lambda m, i, o: seen.append(-1))
    with torch.no_grad():
        folded(torch.randn(3, 3, 8, 4))
    assert seen == [5, 3, -1]
