"""The data-lake bucket itself: access and probing (`access`), preparing it (`setup`), checking
its settings and layout (`check`), and the `ppship s3` command (`command`)."""
