# The RTMP ingest TRTC's relays push to: Debian's nginx with the RTMP module, running
# deployments/compose/nginx-rtmp.container.conf (deployments/nginx-rtmp.conf with the
# statistics page and playing opened to private networks; tests/test_deploy_files.py checks
# that nothing else differs). Built from the repository root:
#   docker build -f deployments/compose/ingest.Dockerfile -t trtc-recorder-ingest:0.1.0 .
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light libnginx-mod-rtmp \
    && rm -rf /var/lib/apt/lists/*

COPY deployments/compose/nginx-rtmp.container.conf /etc/nginx/trtc-recorder-rtmp.conf

# 1935: RTMP (relays publish, recorders play); 8088: the statistics page the recorders read.
EXPOSE 1935 8088
# In the foreground, errors to the container's log.
CMD ["nginx", "-c", "/etc/nginx/trtc-recorder-rtmp.conf", "-g", "daemon off; error_log stderr;"]
