"""The package's layering: AnyUp and the op work with torch alone; only anyup_neck.mm
imports the OpenMMLab packages."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'anyup_neck'
MM_PACKAGES = ('mmengine', 'mmseg', 'mmcv', 'timm', 'torchvision')


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split('.')[0])
    return roots


def test_only_the_mm_layer_imports_openmmlab_or_timm():
    offenders = {str(p.relative_to(PACKAGE)): sorted(_imported_roots(p) & set(MM_PACKAGES))
                 for p in PACKAGE.rglob('*.py') if 'mm' not in p.relative_to(PACKAGE).parts}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_import_with_torch_alone(tmp_path):
    """In an environment holding every installed package but the mm ones (a site-packages
    view without them, no site hooks), AnyUp and the op import and run."""
    import site
    view = tmp_path / 'site'
    view.mkdir()
    for site_dir in map(Path, site.getsitepackages()):
        for entry in site_dir.iterdir():
            root = entry.name.split('-')[0].split('.')[0].lower()
            if root not in MM_PACKAGES and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    script = textwrap.dedent(f'''
        import sys, torch, anyup_neck
        up = anyup_neck.AnyUp(qk_dim=16, lfu_basis=8, num_heads=2)
        out = up(torch.randn(1, 3, 16, 16), torch.randn(1, 5, 2, 2))
        assert out.shape == (1, 5, 16, 16)
        assert not any(m.split('.')[0] in {MM_PACKAGES!r} for m in sys.modules)
        print('ok')
    ''')
    env = {'PYTHONPATH': f'{PACKAGE.parent}:{view}', 'PATH': '/usr/bin:/bin'}
    result = subprocess.run([sys.executable, '-S', '-c', script], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'
