#!/usr/bin/env python3
"""The demo, storing into COS: the simulated room, a COS-compatible endpoint on loopback
(the one the tests use: it checks every request's signature), and the real
cos-python-sdk-v5. Then every object is read back through the SDK and compared, byte for
byte, with the file the recorder made locally.

    python scripts/demo_cos.py [--mode 00|01|02]

Against a real bucket, no script is needed: set RECORDER_STORAGE=cos (and the keys, in the
request or as TENCENTCLOUD_SECRETID/TENCENTCLOUD_SECRETKEY) and run `recorder record`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.cos_endpoint lives beside the package, not in it

from qcloud_cos import CosConfig, CosS3Client  # type: ignore[import-untyped]  # noqa: E402

from flows.cli import main as recorder  # noqa: E402
from recorder.result import ResultDocument  # noqa: E402
from tests.cos_endpoint import CosEndpoint  # noqa: E402

# The demo request's bucket (flows/cli.py); its keys come from the environment.
BUCKET, REGION = "demo-1250000000", "ap-guangzhou"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["00", "01", "02"], default="02")
    args = parser.parse_args()

    secret_id, secret_key = "AKIDdemo", secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="recorder-demo-cos-"))
    with CosEndpoint(secret_id=secret_id, secret_key=secret_key, bucket=BUCKET, region=REGION) as endpoint:
        os.environ |= {
            "RECORDER_STORAGE": "cos",
            "RECORDER_COS_SCHEME": "http",
            "RECORDER_COS_IP": endpoint.host,
            "RECORDER_COS_PORT": str(endpoint.port),
            "RECORDER_KEEP_LOCAL_COPY": "true",  # to compare with what is read back
            "RECORDER_WORK_DIR": str(work / "work"),
            "TENCENTCLOUD_SECRETID": secret_id,
            "TENCENTCLOUD_SECRETKEY": secret_key,
        }
        print(f"COS-compatible endpoint for bucket {BUCKET} ({REGION}) on {endpoint.host}:{endpoint.port}")
        status = recorder(["demo", "--mode", args.mode, "--result-file", str(work / "result.json")])
        document = ResultDocument.model_validate_json((work / "result.json").read_text())
        keys = {"SecretId": secret_id, "SecretKey": secret_key}
        client = CosS3Client(CosConfig(Region=REGION, **keys, **endpoint.sdk_options()))
        local = {path.read_bytes(): path for path in (work / "work").rglob("*.mp[34]")}
        print("\nRead back through cos-python-sdk-v5:")
        identical = 0
        for entry in document.Files:
            if entry.Status != 1:
                continue
            key = unquote(urlparse(entry.RecordFile).path).lstrip("/")
            data = client.get_object(Bucket=BUCKET, Key=key)["Body"].get_raw_stream().read()
            match = local.get(data)
            identical += match is not None
            verdict = f"byte-identical to {match}" if match else "MATCHES NO LOCAL FILE"
            print(f"  {key}  {len(data)} bytes  {verdict}")
    print(
        f"\n{identical} of {len(document.Files)} object(s) byte-identical to the local files (kept in {work})"
    )
    return 0 if status == 0 and identical == len(document.Files) else 1


if __name__ == "__main__":
    sys.exit(main())
