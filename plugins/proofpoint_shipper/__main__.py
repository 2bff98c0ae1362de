"""`python -m proofpoint_shipper` runs the `ppship` command."""

from proofpoint_shipper.cli import main

raise SystemExit(main())
