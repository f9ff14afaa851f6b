"""Every shipped workflow inside ComfyUI, the way a user runs it: the pack cloned into custom_nodes/ of a ComfyUI
0.3.64 root (the stand-in in tests/comfyui_standin: its README says what it reproduces, the namespace package
`comfy/` included), started as `main.py --cpu` on a loopback port; the real frontend (comfyui-frontend-package
1.27.10) in headless Chromium loads each workflow, converts it and queues it with the Run button's call, and the
server validates and executes it on tiny checkpoints. The tokenizers sit where ComfyUI ships them (comfy/...), not
beside the models, so the loader's fallback to ComfyUI's own tokenizers is what runs.

Fails on a pack import error, an extension that does not load, a page error, a rejected prompt or a failed run.
Skipped only outside CI when Chromium, playwright or the frontend package is missing."""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from comfyui_opensora import video_io
from comfyui_opensora.models.tiny import TINY_FILES, TINY_FILES_V2, write_tiny_cogvideox, write_tiny_models
from conftest import REPO_ROOT, golden_root
from workflow_overrides import expected_frames, expected_size, prepare

STANDIN = os.path.join(REPO_ROOT, "tests", "comfyui_standin")
PACK_FOLDER = "ComfyUI-OpenSora"  # the folder name the README's install step gives
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WORKFLOWS = sorted(glob.glob(os.path.join(REPO_ROOT, "workflows", "*.json")))
COGVIDEOX = {"cogvideox_t2v.json": "2b", "cogvideox_i2v.json": "5b_i2v", "cogvideox_v2v.json": "5b"}
EXAMPLE_CLIP_FRAMES = 51  # demo/examples/red_circle.mp4, the example input of video_convert
# A returning user's settings. The last two keep frontend 1.27.10 from throwing on a fresh profile, a page error of
# its own (NavigationMode's onChange sets them before they are registered) that would hide the pack's.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False,
            "Comfy.InstalledVersion": "1.27.10", "Comfy.Canvas.LeftMouseClickBehavior": "panning",
            "Comfy.Canvas.MouseWheelScroll": "zoom"}


def _missing():
    try:
        import comfyui_frontend_package  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install -e '.[test]')"
    return None if CHROMIUM else "no chromium on PATH (apt-get install chromium)"


if _missing():
    if os.environ.get("CI"):
        raise RuntimeError(f"tests/test_real_comfyui.py needs its tools in CI: {_missing()}")
    pytest.skip(_missing(), allow_module_level=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _copy_pack(dst):
    top_level_skip = {".git", ".venv", "output", "input", "tests", "benchmarks", ".pytest_cache"}

    def ignore(folder, names):
        skip = {n for n in names if n == "__pycache__"}
        return skip | (top_level_skip & set(names) if os.path.samefile(folder, REPO_ROOT) else set())

    shutil.copytree(REPO_ROOT, dst, ignore=ignore)


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    root = tmp_path_factory.mktemp("ComfyUI")
    shutil.copytree(STANDIN, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    _copy_pack(root / "custom_nodes" / PACK_FOLDER)
    models = root / "models"
    write_tiny_models(str(models))
    for variant in COGVIDEOX.values():
        write_tiny_cogvideox(str(models / "opensora" / f"cog_{variant}"), variant)
    # ComfyUI's own tokenizers, where it ships them: the loader finds them only through the comfy package
    for model, bundled in ((TINY_FILES["text_encoder"], "comfy/text_encoders/t5_tokenizer"),
                           (TINY_FILES_V2["clip"], "comfy/sd1_tokenizer")):
        (root / bundled).parent.mkdir(parents=True, exist_ok=True)
        os.replace(str(models / os.path.splitext(model)[0]) + "_tokenizer", root / bundled)
    (root / "user" / "default").mkdir(parents=True)
    (root / "user" / "default" / "comfy.settings.json").write_text(json.dumps(SETTINGS))
    port = _free_port()
    log = open(root / "server.log", "w")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OPENSORA_MODELS_DIR")}
    proc = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--preview-method", "auto",
                             "--base-directory", str(root), "--core-object-info",
                             os.path.join(golden_root(), "comfy_frontend", "object_info_0.3.64.json")], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            _get(url + "/api/system_stats")
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("the ComfyUI server did not start:\n" + (root / "server.log").read_text()[-5000:])
            time.sleep(0.5)
    yield {"url": url, "root": root, "log": root / "server.log"}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(comfyui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        context = browser.new_context()
        # As in the recordings of shared/golden/comfy_frontend: nothing leaves the loopback host.
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(comfyui["url"])
                      or route.request.url.startswith(("data:", "blob:")) else route.abort())
        pg = context.new_page()
        pg.problems = []  # page errors, console errors about extensions, failed loads of the pack's files
        pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}\n{e.stack}"))
        pg.on("console", lambda m: m.type == "error" and "extension" in m.text.lower()
              and pg.problems.append(f"console error: {m.text}"))
        pg.on("response", lambda r: r.status >= 400 and "/extensions/" in r.url
              and pg.problems.append(f"HTTP {r.status}: {r.url}"))
        pg.previews = []  # binary websocket frames: the latent previews the samplers send
        pg.on("websocket", lambda ws: ws.on("framereceived", lambda frame: isinstance(frame, bytes)
                                             and pg.previews.append(len(frame))))
        pg.goto(comfyui["url"])
        pg.wait_for_function("window.app?.graph && window.app.extensionManager", timeout=120_000)
        pg.wait_for_load_state("networkidle")
        yield pg
        browser.close()


def test_pack_imports_and_its_extension_loads(comfyui, page):
    log = comfyui["log"].read_text()
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log
    from comfyui_opensora import NODE_CLASS_MAPPINGS

    info = _get(comfyui["url"] + "/api/object_info")
    assert set(NODE_CLASS_MAPPINGS) <= set(info)
    assert all(info[n]["python_module"] == f"custom_nodes.{PACK_FOLDER}" for n in NODE_CLASS_MAPPINGS)
    assert f"/extensions/{PACK_FOLDER}/js/opensora.js" in _get(comfyui["url"] + "/api/extensions")
    templates = _get(comfyui["url"] + "/api/workflow_templates")[PACK_FOLDER]
    assert sorted(templates) == sorted(os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS)
    for template in templates:  # the template browser shows <name>.jpg beside each one
        with urllib.request.urlopen(f"{comfyui['url']}/api/workflow_templates/{PACK_FOLDER}/{template}.jpg") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert not page.problems, "\n".join(page.problems)
    assert page.evaluate("app.extensions.some(e => e.name === 'comfyui_opensora.maskStrategy')")
    # The extension runs: a malformed mask_strategy colours the node and says why in the tooltip.
    bad, good = page.evaluate("""() => {
        const node = LiteGraph.createNode("OpenSoraMaskStrategy");
        app.graph.add(node);
        const w = node.widgets.find(w => w.name === "mask_strategy");
        w.value = "0,0,x"; w.callback(w.value);
        const bad = [node.bgcolor, w.options.tooltip];
        w.value = "0;0,0,0,-1,1"; w.callback(w.value);
        const good = [node.bgcolor ?? null, w.options.tooltip];
        app.graph.remove(node);
        return [bad, good];
    }""")
    assert bad[0] == "#5a2a2a" and "group 1" in bad[1]
    assert good == [None, "mask_strategy: ok"]
    # The example inputs the workflows name were copied into ComfyUI's input folder when the pack loaded.
    from comfyui_opensora.comfy_adapter import EXAMPLE_INPUTS

    assert all((comfyui["root"] / "input" / name).is_file() for name in EXAMPLE_INPUTS)


def _queue(page, workflow, changes=()):
    """Load a UI workflow in the frontend, set widget values ([node id, widget, value]), press Run; returns the
    POST /api/prompt response."""
    page.evaluate("async (workflow) => { await app.loadGraphData(workflow); }", workflow)
    page.evaluate("""(changes) => {
        for (const [id, name, value] of changes) {
            app.graph.getNodeById(Number(id)).widgets.find(w => w.name === name).value = value;
        }
    }""", list(changes))
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as posted:
        page.evaluate("app.queuePrompt(0, 1)")
    return posted.value


def _history(comfyui, prompt_id, timeout=600):
    deadline = time.time() + timeout
    while not (history := _get(f"{comfyui['url']}/api/history/{prompt_id}")):
        assert time.time() < deadline, f"prompt {prompt_id} did not finish in {timeout} s"
        time.sleep(0.2)
    return history[prompt_id]


def test_cancel_stops_sampling_and_leaves_no_file(comfyui, page):
    """The queue's Cancel (POST /interrupt) stops the sampler between steps; nothing is saved. Latent previews
    reach the page while it samples."""
    page.problems.clear()
    page.previews.clear()
    workflow = json.load(open(os.path.join(REPO_ROOT, "workflows", "demo_t2v.json")))
    sampler = next(n["id"] for n in workflow["nodes"] if n["type"] == "OpenSoraSampler")
    save = next(n["id"] for n in workflow["nodes"] if n["type"] == "OpenSoraSaveVideo")
    before = set(glob.glob(str(comfyui["root"] / "output" / "**" / "*"), recursive=True))
    response = _queue(page, workflow, [[sampler, "steps", 1000], [save, "filename_prefix", "cancelled/run"]])
    assert response.status == 200
    deadline = time.time() + 120
    while not page.previews:  # sampling has started
        assert time.time() < deadline, "no latent preview reached the page"
        page.wait_for_timeout(100)
    cancelled = time.time()
    urllib.request.urlopen(urllib.request.Request(comfyui["url"] + "/api/interrupt", method="POST"), timeout=30)
    entry = _history(comfyui, response.json()["prompt_id"], timeout=60)
    stopped_after = time.time() - cancelled
    events = [event for event, _ in entry["status"]["messages"]]
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in events, events
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert set(glob.glob(str(comfyui["root"] / "output" / "**" / "*"), recursive=True)) == before
    assert not page.problems, "\n".join(page.problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[os.path.basename(p) for p in WORKFLOWS])
def test_shipped_workflow_runs_in_comfyui(path, comfyui, page):
    name = os.path.basename(path)
    page.problems.clear()
    shipped = page.evaluate("""async (workflow) => {
        await app.loadGraphData(workflow);
        return (await app.graphToPrompt()).output;
    }""", json.load(open(path)))
    # Tiny checkpoints and sizes, set on the widgets as a user would; the demo workflows run as shipped.
    wanted = json.loads(json.dumps(shipped))
    if not name.startswith("demo_"):
        prepare(wanted, None, name, COGVIDEOX.get(name))
    changes = [[nid, key, value] for nid, node in wanted.items() for key, value in node["inputs"].items()
               if shipped[nid]["inputs"].get(key) != value]
    response = _queue(page, json.load(open(path)), changes)
    body = response.request.post_data_json
    assert body["prompt"] == wanted, "the frontend posted another prompt than the widgets say"
    assert body["extra_data"]["extra_pnginfo"]["workflow"]["nodes"]
    answer = response.json()
    assert response.status == 200 and not answer["node_errors"], json.dumps(answer, indent=1)
    entry = _history(comfyui, answer["prompt_id"])
    status = entry["status"]
    errors = [data for event, data in status["messages"] if event == "execution_error"]
    assert status["status_str"] == "success", json.dumps(errors, indent=1)[:5000]
    saved = [comfyui["root"] / "output" / image["subfolder"] / image["filename"]
             for out in entry["outputs"].values() for image in out.get("images", [])]
    assert len(saved) == 1 and saved[0].is_file()
    video = video_io.read_video(str(saved[0]))
    if not name.startswith("demo_"):
        assert video.frames.shape[0] == expected_frames(name, EXAMPLE_CLIP_FRAMES)
        if expected_size(name, COGVIDEOX.get(name)):
            assert video.frames.shape[1:3] == expected_size(name, COGVIDEOX.get(name))
    assert video_io.read_metadata(str(saved[0]))["workflow"]["nodes"], "the UI workflow is embedded"
    page.wait_for_timeout(200)  # the executed / execution_success messages reach the page
    assert not page.problems, "\n".join(page.problems)
