#!/bin/sh
# cdk.json's "app": `npx cdk synth|diff|deploy` from any shell, activated venv or not. It runs app.py with
# the repository's .venv Python when `make install-dev` made one, else with PATH's python3 (CI installs
# requirements-infra.txt into its Python). CDK_PYTHON picks another interpreter.
here=$(cd "$(dirname "$0")" && pwd)
python=${CDK_PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$here/../.venv/bin/python" ]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/app.py" "$@"
