"""What ``pip install qr-oidc`` puts in a user's site-packages: one import name, ``qr_oidc``,
with the templates, static files and migrations inside it; installed into a fresh venv beside a
module of the user's named ``keys``, both import and the CLI runs."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("qr_oidc-*.whl")
    return built


def test_the_wheel_installs_one_import_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert tops == {"qr_oidc"}, tops
    for needed in ("qr_oidc/provider/web/templates/login.html",
                   "qr_oidc/provider/web/static/qr-login.js",
                   "qr_oidc/provider/storage/migrations/env.py",
                   "qr_oidc/provider/storage/migrations/script.py.mako",
                   "qr_oidc/provider/storage/migrations/versions/0001_initial_schema.py",
                   "qr_oidc/grants/token_core.py", "qr_oidc/keys/keyset.py"):
        assert needed in names, needed
    # every file of the data folders the web layer and the migrations read, whatever is added
    for folder, under in (("provider/web/templates", "*"), ("provider/web/static", "**/*"),
                          ("provider/web/translations", "**/*.[mp]o"),
                          ("provider/storage/migrations", "**/*.py")):
        for path in (ROOT / folder).glob(under):
            if path.is_file() and "__pycache__" not in path.parts:
                inside = "qr_oidc/" + path.relative_to(ROOT).as_posix()
                assert inside in names, inside


def test_installed_beside_a_module_named_keys(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # the dependencies from the test environment's site-packages, as a plain path: its .pth
    # files (among them the editable install of this checkout) are not run
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True,
                               timeout=60).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    user = tmp_path / "project"
    user.mkdir()
    (user / "keys.py").write_text("OWNER = 'the user'\n")
    probe = (
        "import keys, qr_oidc.keys, qr_oidc.provider.runtime.cli as cli\n"
        "assert keys.OWNER == 'the user', keys.__file__\n"
        "assert qr_oidc.keys.KeyStore\n"
        f"assert cli.__file__.startswith({str(venv)!r}), cli.__file__\n"
        "print('both')\n"
    )
    result = subprocess.run([str(python), "-c", probe], cwd=user, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "both", result.stderr
    cli = subprocess.run([str(venv / "bin" / "qr-oidc"), "--help"], cwd=user,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "serve" in cli.stdout, cli.stderr
