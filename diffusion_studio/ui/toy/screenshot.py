"""Take the 2D lab screenshot (docs/screenshot-toy-lab.png): the real window on the "2D lab" tab
after training on a dataset and sampling from it (offscreen or under xvfb-run).

    QT_QPA_PLATFORM=offscreen python -m diffusion_studio.ui.toy.screenshot docs/screenshot-toy-lab.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_studio.ui.toy.screenshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--size", default="1400x900", help="window size WxH")
    parser.add_argument("--dataset", default="moons")
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--sampler", default="dpmpp-2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--t", type=int, default=0, help="the timestep shown (field and forward x_t)")
    parser.add_argument("--dark", action="store_true")
    args = parser.parse_args(argv)

    from diffusion_studio.ui.screenshot import isolated_window, save_grab

    app, window, _scratch = isolated_window(None, args.size, args.dark)
    lab = window.toyLab
    window.tabs.setCurrentWidget(lab)

    def wait_idle(timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            app.processEvents()
            if not lab.state.busy:
                return True
            time.sleep(0.01)
        return False

    combo = lab.toyDatasetCombo
    combo.setCurrentIndex(combo.findData(args.dataset))
    lab.toyTrainStepsSpin.setValue(args.train_steps)
    lab.toyTrainButton.click()
    app.processEvents()
    if not wait_idle(600):
        print("error: training did not finish in time.")
        return 1
    for sampler, steps in (("ddpm", 200), ("ddim", 20), (args.sampler, args.steps)):
        lab.toySamplerCombo.setCurrentIndex(lab.toySamplerCombo.findData(sampler))
        lab.toyStepsSpin.setValue(steps)
        lab.toySampleButton.click()
        app.processEvents()
        if not wait_idle(300):
            print("error: sampling did not finish in time.")
            return 1
    lab.toyTimestepSlider.setValue(args.t)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    ok = save_grab(window, args.out)
    window.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
