"""The report opens in headless Chromium and every figure actually renders."""

from __future__ import annotations

from tests.browser import chromium


def test_index_html_images_render(mlflow_report, tmp_path):
    driver = chromium(tmp_path / "profile")
    try:
        driver.set_window_size(1280, 2000)
        driver.get((mlflow_report["out"] / "index.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) >= 8
        broken = [src for src, complete, width in images if not complete or width == 0]
        assert not broken
        assert "Answer." in driver.find_element("tag name", "body").text
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
    finally:
        driver.quit()
