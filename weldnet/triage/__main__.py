"""``python -m weldnet.triage PHOTOS... --bundle triage --out triage.csv`` (see weldnet.triage.command)."""
from weldnet.core.config import run_stage
from weldnet.triage.command import main

run_stage(main)
