"""The README's two commands: what CI runs is the README's test command as written, the scripts install into a
virtual environment (never into Debian's Python, which refuses it: PEP 668), and under CI the tests run in a
venv made from Debian's own /usr/bin/python3."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")


def readme_commands() -> list[str]:
    """The bash blocks of the README's "The two commands" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The two commands"):]
    section = section[:section.index("\n## ", 1)]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def script_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readme_test_command_exactly_as_written():
    # Given the README's two commands (the demo, then the tests)
    demo, tests = readme_commands()[:2]
    # When .ci/run is read
    lines = script_lines(ROOT / ".ci" / "run")
    # Then it runs the test command as written, under CI=true, and the demo is deploy/demo.sh
    assert tests in lines and "export CI=true" in lines, lines
    assert lines.index("export CI=true") < lines.index(tests)
    assert demo == "bash deploy/demo.sh"


@pytest.mark.parametrize("script", ["deploy/setup.sh", "deploy/demo.sh", "deploy/test.sh"])
def test_the_scripts_never_run_the_systems_python_or_pip_directly(script):
    # Given a script behind the two commands
    lines = script_lines(ROOT / script)
    # When its command lines are read
    bare = [line for line in lines if re.search(r"(^|[;(&|]\s*|\bexec\s+|\$\()(python3?|pip3?|pytest|appsvc-dr)(\s|$)", line)]
    installs = [line for line in lines if "pip install" in line]
    # Then no command starts a bare python/pip/pytest/appsvc-dr from PATH (on Debian that is the system's), and
    # every pip install is the venv's
    assert bare == [], bare
    assert all("$VENV/bin/python" in line for line in installs), installs


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="what CI proves: run through .ci/run")
def test_under_ci_the_tests_run_in_a_venv_made_from_debians_python():
    # Given the interpreter running these tests under CI
    # When it is compared with Debian's own
    # Then it is a virtual environment whose base is Debian's /usr/bin/python3 ...
    assert sys.prefix != sys.base_prefix, f"not a virtual environment: {sys.executable}"
    assert Path(sys.base_prefix) / "bin" / "python3" == DEBIAN_PYTHON or sys.base_prefix == "/usr", sys.base_prefix
    assert sys.version_info[:2] == tuple(int(x) for x in subprocess.run(
        [str(DEBIAN_PYTHON), "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True, text=True, check=True).stdout.split())
    # ... which refuses a system-wide install (PEP 668), the reason the venv exists
    marker = Path(subprocess.run([str(DEBIAN_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                                 capture_output=True, text=True, check=True).stdout.strip()) / "EXTERNALLY-MANAGED"
    assert marker.is_file(), marker
    # and the package under test is the repository's own, installed into that venv
    import workers
    assert Path(workers.__file__).resolve().parent == ROOT / "workers"
    assert Path(sysconfig.get_path("scripts"), "appsvc-dr").is_file()


def test_the_demo_prints_commands_that_run_from_a_shell_without_an_activated_venv(tmp_path):
    # Given a shell whose PATH does not hold this installation's scripts (Debian after deploy/setup.sh)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    # When the demo works out how to name appsvc-dr in the commands it prints
    shown = subprocess.run([sys.executable, "-c", "from workers.demo import command_name; print(command_name())"],
                           env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    # Then that command starts appsvc-dr as printed
    ran = subprocess.run([*shown.split(), "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0 and "appsvc-dr" in ran.stdout + ran.stderr, (shown, ran.stderr[-500:])
