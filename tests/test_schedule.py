import pytest

from stylegan_t2i.gan.schedule import (
    ProgressiveSchedule,
    ScheduleConfig,
    cpu_demo_schedule,
    progan_paper_schedule,
    remaining_seconds,
)


def test_phases_follow_fade_and_stable_kimg():
    s = ProgressiveSchedule(ScheduleConfig(max_res=16, total_kimg=100, stable_kimg=10, fade_kimg=20))
    assert s.num_stages == 3
    p = s.at(0)
    assert (p.stage, p.alpha, p.res) == (0, 1.0, 4)
    assert s.at(9_999).stage == 0
    p = s.at(10_000)  # stage 1 starts fading in
    assert (p.stage, p.alpha, p.res) == (1, 0.0, 8)
    assert s.at(20_000).alpha == pytest.approx(0.5)
    assert s.at(30_000).alpha == 1.0 and s.at(39_999).stage == 1
    p = s.at(40_000)  # stage 2 = 10 + (20 + 10)
    assert (p.stage, p.alpha, p.res) == (2, 0.0, 16)
    assert s.at(10**9).stage == 2 and s.at(10**9).alpha == 1.0


def test_alpha_is_monotone_and_resolution_never_shrinks():
    s = ProgressiveSchedule(cpu_demo_schedule(max_res=32))
    phases = [s.at(n) for n in range(0, 200_000, 500)]
    keys = [(p.stage, p.alpha) for p in phases]
    assert keys == sorted(keys)
    assert phases[-1].res == 32


def test_batch_and_lr_overrides_by_resolution():
    cfg = progan_paper_schedule(max_res=1024)
    s = ProgressiveSchedule(cfg)
    assert s.at(0).batch == 16 and s.at(0).lr == pytest.approx(1e-3)
    last = s.at(int(cfg.total_kimg * 1000) - 1)
    assert last.res == 1024 and last.batch == 3 and last.lr == pytest.approx(1.5e-3)


def test_zero_fade_jumps_straight_to_alpha_one():
    s = ProgressiveSchedule(ScheduleConfig(max_res=8, stable_kimg=1, fade_kimg=0))
    assert s.at(1000).stage == 1 and s.at(1000).alpha == 1.0


def test_per_resolution_lengths_and_the_cpu_demo_hour():
    s = ProgressiveSchedule(ScheduleConfig(max_res=32, total_kimg=100, stable_kimg=30, fade_kimg=30,
                                           kimg_by_res=((4, 0, 5), (16, 10, 20))))
    assert [s.stage_start_kimg(k) for k in range(4)] == [0, 5, 5 + 60, 5 + 60 + 30]
    assert s.at(5_000).res == 8 and s.at(65_000).res == 16 and s.at(70_000).alpha == pytest.approx(0.5)
    assert s.at(95_000).res == 32                                # 32 px keeps the default 30 + 30
    demo = ProgressiveSchedule(cpu_demo_schedule(max_res=32))
    # 4-8 px (colour, position, background) get 30 kimg; 16-32 px, where shape is decided, the rest.
    assert demo.stage_start_kimg(2) == 30 and demo.stage_start_kimg(3) == 80
    assert demo.cfg.total_kimg - demo.stage_start_kimg(2) > 0.85 * demo.cfg.total_kimg
    assert ProgressiveSchedule(cpu_demo_schedule(max_res=16)).at(10**6).res == 16


@pytest.mark.parametrize("bad", [dict(max_res=24), dict(max_res=2), dict(stable_kimg=0),
                                 dict(max_res=16, kimg_by_res=((32, 1, 1),)), dict(kimg_by_res=((8, 1, 0),)),
                                 dict(kimg_by_res=((12, 1, 1),)), dict(max_res=16, start_res=32),
                                 dict(start_res=12), dict(start_res=2)])
def test_invalid_config_is_rejected(bad):
    with pytest.raises(ValueError):
        ScheduleConfig(**bad)


def test_eta_counts_each_stage_at_its_own_speed():
    sched = ProgressiveSchedule(ScheduleConfig(max_res=16, total_kimg=10.0, stable_kimg=2.0, fade_kimg=2.0))
    # 4 px: 0-2 kimg, 8 px: 2-6, 16 px: 6-10. At 1 kimg with 4 px measured at 100 img/s:
    # 1000 images at 100, 4000 at 50 (one stage up, estimated), 4000 at 25.
    assert remaining_seconds(sched, 1000, 10_000, {4: 100.0}) == pytest.approx(10 + 80 + 160)
    # A measured speed replaces the estimate; a stage already passed costs nothing.
    assert remaining_seconds(sched, 3000, 10_000, {4: 100.0, 8: 80.0}) == pytest.approx(3000 / 80 + 4000 / 40)
    assert remaining_seconds(sched, 10_000, 10_000, {16: 5.0}) == 0


def test_start_res_skips_the_stages_below_it_and_its_own_fade():
    """A fine-tuned run (start_res = max_res) is at its final stage with alpha 1 from the first image."""
    final = ProgressiveSchedule(ScheduleConfig(max_res=32, total_kimg=10, stable_kimg=3, fade_kimg=3, start_res=32))
    for nimg in (0, 5_000, 10**9):
        phase = final.at(nimg)
        assert (phase.stage, phase.alpha, phase.res) == (3, 1.0, 32)
    assert [final.stage_start_kimg(k) for k in range(4)] == [0, 0, 0, 0]
    assert remaining_seconds(final, 0, 10_000, {32: 100.0}) == pytest.approx(100)
    middle = ProgressiveSchedule(ScheduleConfig(max_res=32, stable_kimg=3, fade_kimg=2, start_res=16))
    assert (middle.at(0).res, middle.at(0).alpha) == (16, 1.0)
    assert middle.at(3_000).res == 32 and middle.at(4_000).alpha == pytest.approx(0.5)
