"""The wheel carries everything a non-editable install (a container image) needs."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_has_the_packages_generated_code_and_the_viewer_page(tmp_path):
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv), "build", "--wheel", "-q", "-o", str(tmp_path), str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("rlrings-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "rlrings/__init__.py",
        "rlrings/v1/replay_pb2.py",
        "rlrings/algorithms/impala.py",
        "rlrings/services/replay/__main__.py",
        "rlrings/services/viewer/static/index.html",
        # what `rlrings cloud` deploys outside a checkout
        "rlrings/deploy/terraform/main.tf",
        "rlrings/deploy/chart/Chart.yaml",
        "rlrings/deploy/chart/templates/learner/statefulset.yaml",
        "rlrings/deploy/project/pyproject.toml",
        "rlrings/services/learner/Dockerfile",
    ):
        assert needed in names, needed
    top_level = {name.split("/")[0] for name in names if not name.startswith("rlrings-")}
    assert top_level == {"rlrings"}, f"the wheel claims top-level names besides rlrings: {top_level}"
    folders = {path.parent for path in ROOT.glob("rlrings/**/__init__.py")} | {
        path.parent for path in ROOT.glob("services/**/__init__.py")
    }
    for folder in folders:
        relative = folder.relative_to(ROOT)
        packaged = relative if relative.parts[0] == "rlrings" else Path("rlrings") / relative
        assert f"{packaged.as_posix()}/__init__.py" in names, f"{relative} is missing from pyproject's packages"


def test_public_surface_is_lazy():
    code = "import sys, rlrings; rlrings.ReplayClient; assert 'torch' not in sys.modules; rlrings.Policy"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
