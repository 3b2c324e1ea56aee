"""CI must run the test command that README.md gives."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / 'README.md').read_text()
    ci = (REPO / '.ci' / 'run').read_text()
    commands = [line.strip() for line in readme.splitlines() if 'python -m pytest' in line
                and line.strip().startswith('pip install')]
    assert len(commands) == 1, commands
    assert commands[0] in [line.strip() for line in ci.splitlines()]
