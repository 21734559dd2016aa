from distill.convergence import ConvergenceTargets, ConvergenceTracker


def tracked(points, teacher=None):
    tracker = ConvergenceTracker(ConvergenceTargets(psnr=[25.0], below_teacher=[1.0, 0.5]))
    for step, seconds, psnr in points:
        tracker.train_seconds = seconds
        tracker.update(step, psnr, teacher)
    return tracker


def test_first_step_reaching_each_target():
    summary = tracked([(10, 1.0, 24.0), (20, 2.0, 25.2), (30, 3.0, 31.2), (40, 4.0, 31.6)], teacher=32.0).summary()
    assert summary["25dB"] == {"target_db": 25.0, "step": 20, "seconds": 2.0}
    assert summary["teacher-1dB"] == {"target_db": 31.0, "step": 30, "seconds": 3.0}
    assert summary["teacher-0.5dB"] == {"target_db": 31.5, "step": 40, "seconds": 4.0}


def test_unreached_targets_are_listed_with_none():
    summary = tracked([(10, 1.0, 24.0)], teacher=32.0).summary()
    assert summary["teacher-0.5dB"]["step"] is None and summary["25dB"]["seconds"] is None


def test_teacher_psnr_kept_for_later_summaries_and_resume():
    tracker = tracked([(10, 1.0, 31.2)], teacher=32.0)
    restored = ConvergenceTracker(ConvergenceTargets(psnr=[25.0]))
    restored.load_state_dict(tracker.state_dict())
    summary = restored.summary()  # e.g. a `test` run that never validated
    assert summary["teacher-1dB"]["step"] == 10 and summary["teacher-0.5dB"]["step"] is None


def test_targets_follow_a_changed_teacher_psnr():
    tracker = tracked([(10, 1.0, 31.0)], teacher=32.0)
    assert tracker.summary()["teacher-1dB"]["step"] == 10
    assert tracker.summary(32.4)["teacher-1dB"]["step"] is None  # 31.0 < 31.4
