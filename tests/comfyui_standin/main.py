"""`python main.py --cpu --listen 127.0.0.1 --port N --base-directory DIR`, as ComfyUI starts: folders, the
custom nodes, the progress hook, the server and the queue worker."""
import asyncio
import logging
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy.cli_args  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402


def hijack_progress(server):
    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        comfy.model_management.throw_exception_if_processing_interrupted()
        progress = {"value": value, "max": total, "prompt_id": prompt_id or server.last_prompt_id,
                    "node": node_id or server.last_node_id}
        server.send_sync("progress", progress, server.client_id)
        if preview_image is not None:
            server.send_sync(server_mod.BinaryEventTypes.UNENCODED_PREVIEW_IMAGE, preview_image, server.client_id)

    comfy.utils.set_progress_bar_global_hook(hook)


def prompt_worker(queue, server):
    import execution

    executor = execution.PromptExecutor(server)
    while True:
        item = queue.get()
        number, prompt_id, prompt, extra, outputs = item
        ui, status = executor.execute(prompt, prompt_id, extra, outputs)
        queue.task_done(item, ui, status)
        logging.info(f"Prompt executed: {status['status_str']}")


def main(argv):
    global server_mod
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = comfy.cli_args.parse(argv)
    if args.base_directory:
        folder_paths.set_base_directory(args.base_directory)
    for d in (folder_paths.get_input_directory(), folder_paths.get_output_directory(),
              folder_paths.get_temp_directory(), folder_paths.get_user_directory()):
        os.makedirs(d, exist_ok=True)
    import execution
    import nodes
    import server as server_mod

    if args.core_object_info:
        nodes.load_core_nodes(args.core_object_info)
    if not args.disable_all_custom_nodes:
        nodes.init_extra_nodes()
    web_root = args.front_end_root
    if web_root is None:
        import comfyui_frontend_package

        web_root = os.path.join(os.path.dirname(comfyui_frontend_package.__file__), "static")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = server_mod.PromptServer(loop, web_root)
    queue = execution.PromptQueue(server)
    server.add_routes()
    hijack_progress(server)
    threading.Thread(target=prompt_worker, args=(queue, server), daemon=True).start()
    loop.run_until_complete(server.start(args.listen, args.port))
    loop.run_until_complete(server.publish_loop())


if __name__ == "__main__":
    main(sys.argv[1:])
