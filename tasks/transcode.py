from __future__ import annotations

from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from recorder.media.capture import segment_files
from recorder.media.transcode import TranscodeError, TranscodeReport, transcode
from recorder.recording import Recording
from recorder.request import RecordMode
from tasks.session import converted_file


def _worth_retrying(task: Task[..., object], run: TaskRun, state: State[object]) -> bool:
    # A recording without the media the Mode needs will not grow it on a second try.
    return not isinstance(state.result(raise_on_failure=False), TranscodeError)


@task(
    name="transcode",
    task_run_name="transcode-{recording.take.anchor}",
    persist_result=True,
    retries=1,
    retry_delay_seconds=1,
    retry_condition_fn=_worth_retrying,
)
def transcode_recording(recording: Recording, mode: RecordMode) -> TranscodeReport:
    """Make the MP3/MP4 the Mode asks for, beside the recording's segments."""
    if recording.live is not None:
        get_run_logger().info(
            "%s: %s was made while recording (%.1f s; %s)",
            recording.take.anchor,
            recording.live.path.name,
            recording.live.seconds,
            ", ".join(recording.live.streams),
        )
        return recording.live
    destination = converted_file(recording.folder, recording.take, mode)
    report = transcode(segment_files(recording.folder), mode, destination)
    get_run_logger().info(
        "%s: wrote %s (%.1f s; %s)",
        recording.take.anchor,
        destination.name,
        report.seconds,
        ", ".join(report.streams),
    )
    return report
