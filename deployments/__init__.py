"""Running trtc-recorder as a service: the HTTP gateway in front of the Prefect deployment."""
