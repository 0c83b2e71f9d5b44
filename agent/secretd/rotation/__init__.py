"""Rotation the agent performs itself (docs/rotation.md).

    model.py       steps, the Rotator and Target roles, outcomes
    engine.py      one rotation: lock, resume, create -> set -> test -> finish
    state.py       per-secret progress, last rotation and locks in agent.state_dir
    journal.py     audit lines, metrics and logs for each step
    target.py      a secret on a writable backend (backends/rotatable.py) as a Target
    rotators/      random, command, postgresql (+ scram.py: client-side verifiers)
    build.py       [[rotation]] entries -> Rotation objects, for the agent and the CLI
    scheduler.py   the agent's task: run due rotations, with jitter and backoff

Layering: above render (its `command` rotator reuses render/command.py's
hardened runner) and the backends (their write sides, backends/*_write.py),
below the API (api/rotation.py) and the composition root, which builds a
Scheduler (build.build_scheduler) and runs it as one more task. Collaborators
come in through constructors; nothing here reaches back up.
"""
