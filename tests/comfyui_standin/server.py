"""PromptServer: the HTTP and websocket API of ComfyUI 0.3.64 that the frontend uses, every route also under
/api, the pack's web folder at /extensions/<folder>/ and the frontend package at /."""
import asyncio
import glob
import json
import logging
import os
import struct
import sys
import urllib.parse
import uuid
from io import BytesIO

from aiohttp import web
from PIL import Image, ImageOps

import comfy.model_management
import execution
import folder_paths
import nodes
from comfy.cli_args import args

COMFYUI_VERSION = "0.3.64"


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2


def node_info(name):
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    info = {"input": spec, "input_order": {k: list(v) for k, v in spec.items()}, "output": cls.RETURN_TYPES,
            "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
            "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), "name": name,
            "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": getattr(cls, "CATEGORY", "sd"), "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    for flag in ("DEPRECATED", "EXPERIMENTAL"):
        if getattr(cls, flag, False):
            info[flag.lower()] = True
    return info


class PromptServer:
    instance = None

    def __init__(self, loop, web_root):
        PromptServer.instance = self
        self.loop, self.web_root = loop, web_root
        self.messages = asyncio.Queue()
        self.sockets, self.number = {}, 0
        self.client_id = self.last_node_id = self.last_prompt_id = None
        self.prompt_queue = None
        self.user_dir = os.path.join(folder_paths.get_user_directory(), "default")
        os.makedirs(self.user_dir, exist_ok=True)
        self.settings_file = os.path.join(self.user_dir, "comfy.settings.json")
        self.settings = json.load(open(self.settings_file)) if os.path.exists(self.settings_file) else {}
        self.app = web.Application(client_max_size=100 * 1024 * 1024)
        self.routes = web.RouteTableDef()
        self._add_api(self.routes)

    # ---- messages -------------------------------------------------------------------------------------
    def send_sync(self, event, data, sid=None):
        self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))

    def queue_updated(self):
        self.send_sync("status", {"status": self.get_queue_info()})

    def get_queue_info(self):
        return {"exec_info": {"queue_remaining": self.prompt_queue.get_tasks_remaining()}}

    async def publish_loop(self):
        while True:
            event, data, sid = await self.messages.get()
            if event == BinaryEventTypes.UNENCODED_PREVIEW_IMAGE:
                kind, image, size = data
                if size is not None:
                    image = ImageOps.contain(image, (size, size))
                buf = BytesIO()
                buf.write(struct.pack(">I", 1 if kind == "JPEG" else 2))
                image.save(buf, format=kind, quality=95)
                payload = struct.pack(">I", BinaryEventTypes.PREVIEW_IMAGE) + buf.getvalue()
                await self._broadcast(sid, lambda ws: ws.send_bytes(payload))
            else:
                text = json.dumps({"type": event, "data": data})
                await self._broadcast(sid, lambda ws: ws.send_str(text))

    async def _broadcast(self, sid, send):
        targets = [self.sockets[sid]] if sid in self.sockets else list(self.sockets.values()) if sid is None else []
        for ws in targets:
            try:
                await send(ws)
            except Exception as e:  # noqa: BLE001 - a closed socket
                logging.warning(f"send error: {e}")

    # ---- routes ---------------------------------------------------------------------------------------
    def _add_api(self, routes):
        @routes.get("/ws")
        async def websocket(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            sid = request.rel_url.query.get("clientId") or uuid.uuid4().hex
            self.sockets[sid] = ws
            try:
                await ws.send_str(json.dumps({"type": "status", "data": {"status": self.get_queue_info(),
                                                                          "sid": sid}}))
                async for _ in ws:
                    pass
            finally:
                self.sockets.pop(sid, None)
            return ws

        @routes.get("/")
        async def root(request):
            return web.FileResponse(os.path.join(self.web_root, "index.html"),
                                    headers={"Cache-Control": "no-cache"})

        @routes.get("/embeddings")
        async def embeddings(request):
            return web.json_response([os.path.splitext(e)[0] for e in folder_paths.get_filename_list("embeddings")])

        @routes.get("/models")
        async def model_types(request):
            return web.json_response(list(folder_paths.folder_names_and_paths))

        @routes.get("/models/{folder}")
        async def models(request):
            folder = request.match_info["folder"]
            if folder not in folder_paths.folder_names_and_paths:
                return web.Response(status=404)
            return web.json_response(folder_paths.get_filename_list(folder))

        @routes.get("/experiment/models")
        async def experiment_models(request):
            return web.json_response([{"name": k, "folders": v[0]} for k, v in
                                      folder_paths.folder_names_and_paths.items() if k != "custom_nodes"])

        @routes.get("/extensions")
        async def extensions(request):
            found = ["/" + os.path.relpath(f, self.web_root).replace(os.sep, "/") for f in
                     glob.glob(os.path.join(glob.escape(self.web_root), "extensions/**/*.js"), recursive=True)]
            for name, folder in nodes.EXTENSION_WEB_DIRS.items():
                found += ["/extensions/" + urllib.parse.quote(name) + "/" +
                          os.path.relpath(f, folder).replace(os.sep, "/")
                          for f in glob.glob(os.path.join(glob.escape(folder), "**/*.js"), recursive=True)]
            return web.json_response(found)

        @routes.post("/upload/image")
        async def upload_image(request):
            post = await request.post()
            image = post.get("image")
            kind = post.get("type") or "input"
            folder = os.path.join(folder_paths.get_directory_by_type(kind), os.path.normpath(post.get("subfolder", "")))
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, image.filename)
            with open(path, "wb") as f:
                f.write(image.file.read())
            return web.json_response({"name": image.filename, "subfolder": post.get("subfolder", ""), "type": kind})

        @routes.get("/view")
        async def view(request):
            q = request.rel_url.query
            name, folder = folder_paths.annotated_filepath(q.get("filename", ""))
            if not name or name[0] == "/" or ".." in name:
                return web.Response(status=400)
            folder = folder or folder_paths.get_directory_by_type(q.get("type", "output"))
            if folder is None:
                return web.Response(status=400)
            if q.get("subfolder"):
                sub = os.path.join(folder, q["subfolder"])
                if os.path.commonpath((os.path.abspath(sub), folder)) != folder:
                    return web.Response(status=403)
                folder = sub
            path = os.path.join(folder, os.path.basename(name))
            if not os.path.isfile(path):
                return web.Response(status=404)
            return web.FileResponse(path, headers={"Content-Disposition": f'filename="{os.path.basename(name)}"'})

        @routes.get("/system_stats")
        async def system_stats(request):
            mm = comfy.model_management
            dev = mm.get_torch_device()
            return web.json_response({
                "system": {"os": os.name, "ram_total": mm.get_total_memory(mm.torch.device("cpu")),
                           "ram_free": mm.get_free_memory(mm.torch.device("cpu")),
                           "comfyui_version": COMFYUI_VERSION, "required_frontend_version": "1.27.10",
                           "python_version": sys.version, "pytorch_version": mm.torch_version,
                           "embedded_python": False, "argv": sys.argv},
                "devices": [{"name": mm.get_torch_device_name(dev), "type": dev.type, "index": dev.index,
                             "vram_total": mm.get_total_memory(dev), "vram_free": mm.get_free_memory(dev),
                             "torch_vram_total": mm.get_total_memory(dev),
                             "torch_vram_free": mm.get_free_memory(dev)}]})

        @routes.get("/features")
        async def features(request):
            return web.json_response({"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024})

        @routes.get("/prompt")
        async def get_prompt(request):
            return web.json_response(self.get_queue_info())

        @routes.get("/object_info")
        async def object_info(request):
            out = {}
            for name in nodes.NODE_CLASS_MAPPINGS:
                try:
                    out[name] = node_info(name)
                except Exception:  # noqa: BLE001 - ComfyUI logs it and leaves the node out
                    logging.exception(f"[ERROR] An error occurred while retrieving information for the '{name}' node.")
            return web.json_response(out)

        @routes.get("/object_info/{node_class}")
        async def object_info_node(request):
            name = request.match_info["node_class"]
            return web.json_response({name: node_info(name)} if name in nodes.NODE_CLASS_MAPPINGS else {})

        @routes.get("/history")
        async def history(request):
            n = request.rel_url.query.get("max_items")
            return web.json_response(self.prompt_queue.get_history(max_items=int(n) if n else None))

        @routes.get("/history/{prompt_id}")
        async def history_one(request):
            return web.json_response(self.prompt_queue.get_history(prompt_id=request.match_info["prompt_id"]))

        @routes.get("/queue")
        async def queue(request):
            running, pending = self.prompt_queue.get_current_queue()
            return web.json_response({"queue_running": running, "queue_pending": pending})

        @routes.post("/prompt")
        async def post_prompt(request):
            data = await request.json()
            number = float(data["number"]) if "number" in data else self.number
            if "number" not in data:
                if data.get("front"):
                    number = -number
                self.number += 1
            if "prompt" not in data:
                return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                                    "details": "No prompt provided", "extra_info": {}},
                                          "node_errors": {}}, status=400)
            prompt = data["prompt"]
            valid, error, outputs, node_errors = execution.validate_prompt(prompt)
            extra = data.get("extra_data", {})
            if "client_id" in data:
                extra["client_id"] = data["client_id"]
            if not valid:
                logging.warning(f"invalid prompt: {error}")
                return web.json_response({"error": error, "node_errors": node_errors}, status=400)
            prompt_id = data.get("prompt_id") or str(uuid.uuid4())
            self.prompt_queue.put((number, prompt_id, prompt, extra, outputs))
            return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

        @routes.post("/interrupt")
        async def interrupt(request):
            nodes.interrupt_processing()
            return web.Response(status=200)

        @routes.post("/queue")
        async def post_queue(request):
            return web.Response(status=200)

        @routes.post("/history")
        async def post_history(request):
            return web.Response(status=200)

        @routes.post("/free")
        async def free(request):
            return web.Response(status=200)

        # ---- the user manager's routes (one default user) ----------------------------------------------
        @routes.get("/users")
        async def users(request):
            return web.json_response({"storage": "server", "migrated": True})

        @routes.get("/settings")
        async def settings(request):
            return web.json_response(self.settings)

        @routes.get("/settings/{id}")
        async def setting(request):
            return web.json_response(self.settings.get(request.match_info["id"]))

        def save_settings():
            with open(self.settings_file, "w") as f:
                json.dump(self.settings, f, indent=4)

        @routes.post("/settings")
        async def post_settings(request):
            self.settings.update(await request.json())
            save_settings()
            return web.Response(status=200)

        @routes.post("/settings/{id}")
        async def post_setting(request):
            self.settings[request.match_info["id"]] = await request.json()
            save_settings()
            return web.Response(status=200)

        def user_path(name):
            path = os.path.abspath(os.path.join(self.user_dir, name))
            return path if os.path.commonpath((path, self.user_dir)) == self.user_dir else None

        @routes.get("/userdata")
        async def userdata_list(request):
            folder = user_path(request.rel_url.query.get("dir", ""))
            if folder is None or not os.path.isdir(folder):
                return web.Response(status=404)
            names = [os.path.relpath(os.path.join(cur, f), folder).replace(os.sep, "/")
                     for cur, _, files in os.walk(folder) for f in files]
            return web.json_response(sorted(names))

        @routes.get("/v2/userdata")
        async def userdata_v2(request):
            return web.json_response([])

        @routes.get("/userdata/{file}")
        async def userdata_get(request):
            path = user_path(urllib.parse.unquote(request.match_info["file"]))
            if path is None or not os.path.isfile(path):
                return web.Response(status=404)
            return web.FileResponse(path)

        @routes.post("/userdata/{file}")
        async def userdata_post(request):
            name = urllib.parse.unquote(request.match_info["file"])
            path = user_path(name)
            if path is None:
                return web.Response(status=400)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(await request.read())
            return web.json_response(name)

        @routes.get("/i18n")
        async def i18n(request):
            return web.json_response({})

        @routes.get("/workflow_templates")
        async def workflow_templates(request):
            found = {}
            for name, folder in nodes.LOADED_MODULE_DIRS.items():
                for sub in ("example_workflows", "example", "examples", "workflow", "workflows"):
                    files = sorted(glob.glob(os.path.join(glob.escape(folder), sub, "*.json")))
                    if files:
                        found[name] = [os.path.splitext(os.path.basename(f))[0] for f in files]
                        break
            return web.json_response(found)

    def add_routes(self):
        api = web.RouteTableDef()
        for route in self.routes:
            api.route(route.method, "/api" + route.path)(route.handler)
        self.app.add_routes(api)
        self.app.add_routes(self.routes)
        for name, folder in nodes.LOADED_MODULE_DIRS.items():
            for sub in ("example_workflows", "example", "examples", "workflow", "workflows"):
                if os.path.isdir(os.path.join(folder, sub)):
                    self.app.add_routes([web.static("/api/workflow_templates/" + name, os.path.join(folder, sub))])
                    break
        for name, folder in nodes.EXTENSION_WEB_DIRS.items():
            self.app.add_routes([web.static("/extensions/" + urllib.parse.quote(name), folder)])
        self.app.router.add_get("/templates/index.json", lambda r: web.json_response([]))
        self.app.add_routes([web.static("/", self.web_root)])

    async def start(self, address, port):
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, address, port).start()
        logging.info(f"To see the GUI go to: http://{address}:{port}")
