"""AnyUp equals the official model's formulation, in float64.

The reference (:mod:`anyup_neck.upsampler.official`) is written independently of the package's
layers: functional on the raw state_dict, every intermediate kept, the LFU's whole response
stack built at once and a dense masked (H*W) x (h*w) attention. It fixes the numerics the
package must reproduce: the float32 window rule, the LFU's grouping of the responses, RoPE's
angles and RMSNorm's epsilon. Each path of the package (the compiled CPU kernels, the GPU
formulations run here on the CPU, the plain PyTorch ops) must match it to round-off.
"""
from __future__ import annotations

import operator

import pytest
import torch

from anyup_neck.ops import fused
from anyup_neck.upsampler.official import official_anyup as reference_anyup
from tests.conftest import randomized_anyup
from tests.upsampler.paths import use_paths

# (C, image HxW, feature hxw, output HxW or None, batch, window ratio, what it covers)
CASES = [
    (1, (32, 32), (4, 4), None, 1, 0.1, 'one channel, x8'),
    (3, (28, 42), (2, 3), None, 1, 0.1, 'non-square, x14'),
    (384, (48, 64), (3, 4), None, 1, 0.1, 'ViT width, x16'),
    (1024, (20, 20), (6, 6), (13, 17), 1, 0.1, 'wide, non-integer ratio, non-square out'),
    (5, (24, 24), (8, 8), (5, 6), 1, 0.1, 'output smaller than features'),
    (7, (16, 24), (4, 6), (16, 24), 1, 0.0, 'global window'),
    (6, (18, 18), (3, 3), (36, 30), 3, 0.1, 'batch 3, output larger than image'),
    (2, (30, 10), (6, 2), (1, 23), 2, 0.25, '1xN output'),
]


@pytest.mark.parametrize('C,img,feat,out,batch,ratio,_', CASES, ids=[c[-1] for c in CASES])
@pytest.mark.parametrize('mode', ['official', 'paper'])
@pytest.mark.parametrize('kernels', ['cpu', 'pytorch', 'gpu'])
def test_matches_reference_float64(C, img, feat, out, batch, ratio, _, mode, kernels, monkeypatch):
    """Inference runs the compiled CPU kernels where it can; 'pytorch' turns them off, 'gpu'
    also sends every primitive through its GPU formulation."""
    use_paths(monkeypatch, kernels)
    model = randomized_anyup(window_ratio=ratio, lfu_mode=mode, backend='torch')
    image = torch.randn(batch, 3, *img, dtype=torch.float64)
    feats = torch.randn(batch, C, *feat, dtype=torch.float64)
    with torch.no_grad():
        got = model(image, feats, output_size=out)
    expected = reference_anyup(model.state_dict(), image, feats, out or img, ratio=ratio, mode=mode)
    assert got.shape == (batch, C, *(out or img))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize('kernels', ['cpu', 'gpu'])
def test_float32_matches_reference_to_round_off(kernels, monkeypatch):
    use_paths(monkeypatch, kernels)
    model = randomized_anyup(dtype=torch.float32, backend='torch')
    image = torch.randn(2, 3, 56, 42)
    feats = torch.randn(2, 384, 4, 3)
    with torch.no_grad():
        got = model(image, feats)
    sd64 = {k: v.double() for k, v in model.state_dict().items()}
    expected = reference_anyup(sd64, image.double(), feats.double(), (56, 42))
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('backend', ['torch', 'dense'])
def test_backends_agree_inside_the_model(backend):
    model = randomized_anyup(backend=backend)
    image = torch.randn(1, 3, 33, 47, dtype=torch.float64)
    feats = torch.randn(1, 16, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        got = model(image, feats, output_size=(21, 50))
    expected = reference_anyup(model.state_dict(), image, feats, (21, 50))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_encoding_can_be_shared_across_feature_maps():
    model = randomized_anyup()
    image = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    feats_a = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    feats_b = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        enc = model.encode_image(image)
        torch.testing.assert_close(model.upsample(enc, feats_a, (16, 16)),
                                   model(image, feats_a, (16, 16)))
        torch.testing.assert_close(model.upsample(enc, feats_b, 32), model(image, feats_b))


def test_attention_map_is_the_row_that_produces_the_pixel():
    model = randomized_anyup()
    image = torch.randn(2, 3, 24, 32, dtype=torch.float64)
    feats = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out = model(image, feats, output_size=(12, 20))
        weights = model.attention_map(image, feats, (12, 20), pixel=(7, 15))
    assert weights.shape == (2, 6, 8)
    torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(torch.einsum('bhw,bchw->bc', weights, feats), out[:, :, 7, 15])
    assert (weights[:, :, :5] == 0).all()     # window of column 15/20 starts at key column 5


@pytest.mark.parametrize('dtype, tolerance', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('overwrite', [False, True])
def test_row_blocked_query_path_equals_the_direct_one(dtype, tolerance, memory_format, overwrite,
                                                      monkeypatch):
    """Inference decodes queries in row blocks (channels-last ones with the Winograd conv, into
    the queries' own memory with ``overwrite``); it must equal the autograd path."""
    model = randomized_anyup(qk_dim=16, lfu_basis=8, num_heads=2).to(dtype)
    monkeypatch.setattr(fused, 'max_piece_elements', 16 * 31 * 3)   # 3 rows per block
    q = torch.randn(2, 16, 20, 31, dtype=dtype).contiguous(memory_format=memory_format)
    attention, conv = model.cross_decode.cross_attn, model.cross_decode.conv2d
    direct = attention.project_queries(q, query_conv=conv)
    with torch.no_grad():
        blocked = attention.project_queries(q.clone(), query_conv=conv, overwrite=overwrite)
    torch.testing.assert_close(blocked, direct.detach(), rtol=tolerance, atol=tolerance)


def test_torch_compile_traces_the_whole_model():
    """Under torch.compile (one graph, no break) the primitives take their PyTorch formulations;
    the result equals eager mode's (which uses the CPU kernels) to round-off."""
    model = randomized_anyup(dtype=torch.float32, qk_dim=16, lfu_basis=8, num_heads=2)
    image, feats = torch.randn(2, 3, 24, 20), torch.randn(2, 5, 3, 4)
    with torch.no_grad():
        expected = model(image, feats, output_size=(13, 17))
        compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
        got = compiled(image, feats, output_size=(13, 17))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_torch_compile_traces_the_gpu_formulation():
    """The GPU formulations of the primitives (taken on the CPU for bfloat16) and the tiled
    PyTorch attention, CUDA's default backend, trace in one graph too."""
    model = randomized_anyup(dtype=torch.bfloat16, qk_dim=16, lfu_basis=8, num_heads=2)
    model.backend = 'torch'
    image = torch.randn(2, 3, 24, 20, dtype=torch.bfloat16)
    feats = torch.randn(2, 5, 3, 4, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = model(image, feats, output_size=(13, 17))
        compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
        got = compiled(image, feats, output_size=(13, 17))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_torch_compile_traces_a_training_step_of_the_gpu_formulation():
    """With autograd too, the GPU formulations' own backwards (GroupNorm + SiLU, RoPE) trace
    in one graph (no ``out=`` into maps of another layout while compiling): the same output
    and parameter gradients as eager, in bfloat16 (the GPU formulation on the CPU)."""
    model = randomized_anyup(dtype=torch.bfloat16, qk_dim=16, lfu_basis=8, num_heads=2)
    model.backend = 'torch'
    image = torch.randn(2, 3, 24, 20, dtype=torch.bfloat16)
    feats = torch.randn(2, 5, 3, 4, dtype=torch.bfloat16)
    results = []
    for run in (model, torch.compile(model, backend='aot_eager', fullgraph=True)):
        model.zero_grad()
        out = run(image, feats, output_size=(13, 17))
        out.float().square().sum().backward()
        results.append([out.detach()] + [p.grad for p in model.parameters()
                                         if p.grad is not None])
    assert len(results[0]) == len(results[1]) > 50
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def _in_place(node: torch.fx.Node) -> bool:
    """Whether a node of a Dynamo graph is an in-place operation (``x.mul_(...)``,
    ``F.silu(x, inplace=True)``)."""
    name = node.target if isinstance(node.target, str) else getattr(node.target, '__name__', '')
    return (node.op in ('call_method', 'call_function') and name.endswith('_')
            and not name.startswith('_')) or node.kwargs.get('inplace') is True


def _function_outputs(graph_module: torch.fx.GraphModule):
    """(forward graph, the nodes it returns as outputs) of each autograd.Function in a Dynamo
    graph. Its forward returns (outputs, saved tensors); under torch 2.11 the outputs are
    followed by every intermediate, so those the graph reads (getitem) are taken."""
    for node in graph_module.graph.nodes:
        if 'autograd_function_apply' in str(node.target):
            forward = getattr(graph_module, node.args[0].target)
            (output,) = [n for n in forward.graph.nodes if n.op == 'output']
            returned = output.args[0][0]
            returned = list(returned) if isinstance(returned, (tuple, list)) else [returned]
            read = sorted({u.args[1] for u in node.users if u.target is operator.getitem})
            yield forward, [returned[i] for i in read] or returned[:1]


def test_no_autograd_function_returns_an_in_place_result_while_compiling():
    """Under torch.compile, torch 2.11 gives an autograd.Function whose forward returns an
    in-place operation's result zero gradients (pytorch/pytorch#180642: the step above fails
    there, passes on later releases). So no forward of the model's Functions (GroupNorm + SiLU,
    RoPE) returns one, read off the graph Dynamo traces, at any torch version."""
    model = randomized_anyup(dtype=torch.bfloat16, qk_dim=16, lfu_basis=8, num_heads=2)
    model.backend = 'torch'
    graphs = []

    def capture(graph_module, inputs):
        graphs.append(graph_module)
        return graph_module.forward
    out = torch.compile(model, backend=capture, fullgraph=True)(
        torch.randn(2, 3, 24, 20, dtype=torch.bfloat16),
        torch.randn(2, 5, 3, 4, dtype=torch.bfloat16), output_size=(13, 17))
    assert out.requires_grad and len(graphs) == 1
    functions = list(_function_outputs(graphs[0]))
    assert len(functions) > 10    # every GroupNorm + SiLU of the ResBlocks, and RoPE
    for forward, returned in functions:
        assert not [n.format_node() for n in returned if _in_place(n)], forward.code
