# Sourced by the launcher scripts: which Python runs mmcc. In order: $PYTHON;
# the active virtual or conda environment's `python`; the project's own
# .venv (what `make setup` creates), so a user who never activated it can
# launch; else python3.
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && command -v python >/dev/null; then
        PYTHON=python
    elif [ -x "$(dirname "${BASH_SOURCE[0]}")/../.venv/bin/python" ]; then
        PYTHON="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
