from __future__ import annotations

from prefect import Task, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from recorder.media.capture import segment_files
from recorder.media.transcode import TranscodeError, TranscodeReport, transcode_pieces
from recorder.recording import Recording
from tasks.session import RoomSession, converted_file, run_logger


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
def transcode_recording(session: RoomSession, recording: Recording) -> list[TranscodeReport]:
    """Make the MP3/MP4 the Mode asks for beside the recording's segments: one file, or
    consecutive files of at most the session's `max_file_seconds` each."""
    logger = run_logger(session, recording.take)
    mode, max_seconds = session.mode, session.max_file_seconds
    made_live = recording.live is not None
    if recording.live is not None:
        reports = recording.live
    else:
        destination = converted_file(recording.folder, recording.take, mode)
        reports = transcode_pieces(segment_files(recording.folder), mode, destination, max_seconds)
    for report in reports:
        logger.info(
            "%s: %s %s (%.1f s from %.1f s; %s)",
            recording.take.anchor,
            "made while recording:" if made_live else "wrote",
            report.path.name,
            report.seconds,
            report.start_seconds,
            ", ".join(report.streams),
        )
    return reports
