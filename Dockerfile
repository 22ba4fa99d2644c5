# softap-sim in a container: one emulated device, its control API and the embedded cloud.
#   docker build -t softap-sim .
#   docker run --rm -v softap-sim:/data -p 127.0.0.1:5609:5609 -p 127.0.0.1:8080:8080 \
#       -p 127.0.0.1:5610:5610 -p 127.0.0.1:8181:8181 -p 127.0.0.1:5683:5683 softap-sim
# Not built in this project's CI (no container runtime there): kept deliberately simple.
FROM python:3.12-slim

RUN useradd --create-home --uid 10001 softap \
    && mkdir /data \
    && chown softap:softap /data

WORKDIR /opt/softap-sim
COPY pyproject.toml README.md ./
COPY firmware_model ./firmware_model
COPY softap_sim ./softap_sim
RUN pip install --no-cache-dir .

USER softap
# the device (id, key, networks, claim code) and the cloud database survive restarts
ENV SOFTAP_SIM_STATE_DIR=/data
VOLUME ["/data"]

# SoftAP TCP, SoftAP HTTP, control API, cloud REST API, cloud device endpoint
EXPOSE 5609 8080 5610 8181 5683

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:5610/v1/health', timeout=2).status != 200)"]

ENTRYPOINT ["softap-sim"]
# every listener on all interfaces of the container; publish the ports on 127.0.0.1 of
# the host (above): the control API and the cloud have no network-grade authentication
CMD ["run", "--host", "0.0.0.0", "--control-host", "0.0.0.0", "--cloud-host", "0.0.0.0", "--cloud-public", "--plain"]
