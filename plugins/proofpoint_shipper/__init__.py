"""proofpoint-shipper: collect Proofpoint email-security logs and land them in S3.

Entry point: the `ppship` console command (`proofpoint_shipper.cli:main`).
"""

__version__ = "0.1.0"
