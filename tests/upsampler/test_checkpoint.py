"""State-dict compatibility with the official checkpoints, round trips and clear failures."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anyup_neck import AnyUp
from tests.conftest import randomized_anyup

OFFICIAL_KEYS = Path(__file__).with_name('official_state_dict_keys.txt')


def _official_layout() -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in OFFICIAL_KEYS.read_text().splitlines():
        if line and not line.startswith('#'):
            key, shape = line.split('\t')
            layout[key] = tuple(int(s) for s in shape.strip('()').split(',') if s.strip())
    return layout


def test_state_dict_reproduces_the_official_keys_and_shapes():
    layout = _official_layout()
    assert len(layout) == 73
    ours = {k: tuple(v.shape) for k, v in AnyUp().state_dict().items()}
    assert ours == layout


def test_official_layout_checkpoint_loads_unchanged(tmp_path):
    """A file with exactly the official keys/shapes loads through both entry points."""
    state = {k: torch.randn(shape) for k, shape in _official_layout().items()}
    path = tmp_path / 'anyup_multi_backbone.pth'
    torch.save(state, path)
    model = AnyUp()
    model.load_state_dict(torch.load(path))
    loaded = AnyUp.from_pretrained(path)
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v)
        assert torch.equal(model.state_dict()[k], v)


def test_round_trip_gives_identical_outputs(tmp_path):
    model = randomized_anyup(dtype=torch.float32, qk_dim=32, lfu_basis=16, num_heads=2)
    path = tmp_path / 'up.pth'
    torch.save(model.state_dict(), path)
    loaded = AnyUp.from_pretrained(path, num_heads=2).eval()
    assert loaded.key_features_encoder[0].basis.shape[0] == 16
    image, feats = torch.randn(2, 3, 24, 20), torch.randn(2, 5, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, feats), model(image, feats), rtol=0, atol=0)


def test_from_pretrained_unwraps_containers_and_prefixes(tmp_path):
    model = randomized_anyup(dtype=torch.float32, qk_dim=16, lfu_basis=8, num_heads=2)
    wrapped = {'meta': {}, 'state_dict': {f'upsampler.{k}': v for k, v in
                                          model.state_dict().items()}}
    path = tmp_path / 'iter_10.pth'
    torch.save(wrapped, path)
    loaded = AnyUp.from_pretrained(path, prefix='upsampler.', num_heads=2)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_mismatched_checkpoint_lists_every_problem(tmp_path):
    state = AnyUp().state_dict()
    del state['rope.freqs']
    del state['aggregation.0.weight']
    state['extra.weight'] = torch.zeros(1)
    state['cross_decode.conv2d.weight'] = torch.zeros(128, 128, 1, 1)
    path = tmp_path / 'bad.pth'
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        AnyUp.from_pretrained(path)
    msg = str(err.value)
    for piece in ('missing keys (2)', 'rope.freqs', 'aggregation.0.weight',
                  'unexpected keys (1)', 'extra.weight', 'shape mismatches (1)',
                  'cross_decode.conv2d.weight: expected (128, 128, 3, 3), got (128, 128, 1, 1)'):
        assert piece in msg


def test_missing_file_and_non_state_dict_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint: expected an existing file'):
        AnyUp.from_pretrained(tmp_path / 'nope.pth')
    path = tmp_path / 'list.pth'
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match='expected a state_dict'):
        AnyUp.from_pretrained(path)


def test_from_pretrained_downloads_a_url_once(tmp_path, monkeypatch):
    """URLs go through torch.hub's cache; served here from a loopback HTTP server."""
    import functools
    import http.server
    import threading

    model = randomized_anyup(dtype=torch.float32, qk_dim=16, lfu_basis=8, num_heads=2)
    served = tmp_path / 'served'
    served.mkdir()
    torch.save(model.state_dict(), served / 'anyup_small.pth')
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/anyup_small.pth'
        for _ in range(2):
            loaded = AnyUp.from_pretrained(url, num_heads=2)
            assert all(torch.equal(loaded.state_dict()[k], v)
                       for k, v in model.state_dict().items())
    finally:
        server.shutdown()
        server.server_close()
    assert len(requests) == 1                                        # second call: from cache
    assert list((tmp_path / 'torch_home').rglob('anyup_small.pth'))
