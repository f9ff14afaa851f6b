"""ComfyUI's folder registry: model folders by kind, the input / output / temp / user directories and the
save-path counter. `set_base_directory` is what `main.py --base-directory` does."""
import contextlib
import os
import re
import time

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
MODEL_KINDS = {  # kind -> sub-folders of models/ (0.3.64's list, for the kinds a video pack can meet)
    "checkpoints": ["checkpoints"], "configs": ["configs"], "loras": ["loras"], "vae": ["vae"],
    "text_encoders": ["text_encoders", "clip"], "diffusion_models": ["unet", "diffusion_models"],
    "clip_vision": ["clip_vision"], "style_models": ["style_models"], "embeddings": ["embeddings"],
    "diffusers": ["diffusers"], "vae_approx": ["vae_approx"], "controlnet": ["controlnet", "t2i_adapter"],
    "gligen": ["gligen"], "upscale_models": ["upscale_models"], "hypernetworks": ["hypernetworks"],
    "photomaker": ["photomaker"], "classifiers": ["classifiers"],
}

base_path = os.path.dirname(os.path.realpath(__file__))
models_dir = os.path.join(base_path, "models")
folder_names_and_paths: dict[str, tuple[list[str], set]] = {}
output_directory = input_directory = temp_directory = user_directory = None


def set_base_directory(path):
    global base_path, models_dir, output_directory, input_directory, temp_directory, user_directory
    base_path = os.path.abspath(path)
    models_dir = os.path.join(base_path, "models")
    folder_names_and_paths.clear()
    for kind, subs in MODEL_KINDS.items():
        exts = set() if kind == "diffusers" else set(supported_pt_extensions)
        folder_names_and_paths[kind] = ([os.path.join(models_dir, s) for s in subs], exts)
    folder_names_and_paths["custom_nodes"] = ([os.path.join(base_path, "custom_nodes")], set())
    output_directory = os.path.join(base_path, "output")
    input_directory = os.path.join(base_path, "input")
    temp_directory = os.path.join(base_path, "temp")
    user_directory = os.path.join(base_path, "user")


set_base_directory(base_path)


@contextlib.contextmanager
def _no_cache():
    yield


cache_helper = _no_cache()


def get_output_directory():
    return output_directory


def get_input_directory():
    return input_directory


def get_temp_directory():
    return temp_directory


def get_user_directory():
    return user_directory


def get_directory_by_type(type_name):
    return {"output": get_output_directory(), "temp": get_temp_directory(),
            "input": get_input_directory()}.get(type_name)


def annotated_filepath(name):
    """'file.png [output]' -> ('file.png', the output folder); no annotation -> (name, None)."""
    for tag, folder in (("[output]", get_output_directory()), ("[input]", get_input_directory()),
                        ("[temp]", get_temp_directory())):
        if name.endswith(tag):
            return name[:-len(tag)].rstrip(), folder
    return name, None


def get_annotated_filepath(name, default_dir=None):
    name, base_dir = annotated_filepath(name)
    return os.path.join(base_dir or default_dir or get_input_directory(), name)


def exists_annotated_filepath(name):
    return os.path.exists(get_annotated_filepath(name))


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    paths, _ = folder_names_and_paths.setdefault(folder_name, ([], set()))
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name):
    paths, exts = folder_names_and_paths[folder_name]
    found = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for cur, _, files in os.walk(root, followlinks=True):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    found.add(os.path.relpath(os.path.join(cur, f), root).replace(os.sep, "/"))
    return sorted(found)


def get_full_path(folder_name, filename):
    for root in folder_names_and_paths.get(folder_name, ([], set()))[0]:
        path = os.path.join(root, os.path.relpath(os.path.join("/", filename), "/"))
        if os.path.isfile(path):
            return path
    return None


def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
    """(folder, filename, counter, subfolder, filename_prefix): the counter is one more than the highest
    '<filename>_NNNNN' already in the folder; %width%, %height%, %year% ... are replaced."""
    now = time.localtime()
    for key, value in {"%width%": image_width, "%height%": image_height, "%year%": now.tm_year,
                       "%month%": f"{now.tm_mon:02}", "%day%": f"{now.tm_mday:02}", "%hour%": f"{now.tm_hour:02}",
                       "%minute%": f"{now.tm_min:02}", "%second%": f"{now.tm_sec:02}"}.items():
        filename_prefix = filename_prefix.replace(key, str(value))
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("Saving image outside the output folder is not allowed."
                        f"\n full_output_folder: {os.path.abspath(full_output_folder)}\n output_dir: {output_dir}")
    os.makedirs(full_output_folder, exist_ok=True)
    pattern = re.compile(re.escape(filename) + r"_(\d+)")
    counters = [int(m.group(1)) for f in os.listdir(full_output_folder) if (m := pattern.match(f))]
    return full_output_folder, filename, max(counters, default=0) + 1, subfolder, filename_prefix
