"""One Prefect task per pipeline step; each is a thin wrapper over recorder/."""
