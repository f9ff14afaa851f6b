"""The family table (models/families.py): complete, consistent, and the only place that knows the families."""
import ast
import os

from comfyui_opensora.models import families, pipeline
from comfyui_opensora.models.family import Family

from conftest import REPO_ROOT

# Public API: the combo values saved workflows store, in the order whose first entry is the default.
SHIPPED_TEXT_FAMILIES = ["opensora-v1.2", "cogvideox", "opensora-v1.0", "opensora-v1.1", "opensora-v2.0",
                         "opensora-v2.0-t2i"]
SHIPPED_SCHEDULERS = ["rflow", "dpm", "ddim", "iddpm", "rflow-v2"]


def test_combo_lists_from_the_table_keep_the_shipped_order():
    assert pipeline.TEXT_FAMILIES[:len(SHIPPED_TEXT_FAMILIES)] == SHIPPED_TEXT_FAMILIES
    assert pipeline.SCHEDULERS[:len(SHIPPED_SCHEDULERS)] == SHIPPED_SCHEDULERS


def test_every_entry_is_complete_and_consistent():
    vae_names = {v.name for v in families.VAES.values()}
    kinds = [k for f in families.FAMILIES.values() for k in f.checkpoints]
    assert len(kinds) == len(set(kinds)), "a checkpoint kind belongs to one family"
    for name, f in families.FAMILIES.items():
        assert isinstance(f, Family) and f.name == name
        assert f.schedulers and f.text_families and f.checkpoints and f.label
        assert set(f.vaes) <= vae_names, f"{name} denoises latents of a VAE the table does not have"
        assert callable(f.load) and callable(f.sample) and callable(f.encode_text)
    for kind, v in families.VAES.items():
        assert callable(v.load) and v.presets.pixels and v.presets.aspect_ratios
        assert any(v.name in f.vaes for f in families.FAMILIES.values()), f"no family samples {kind}'s latents"


def _names() -> set[str]:
    table = families.FAMILIES.values()
    return ({f.name for f in table} | {t for f in table for t in f.text_families} |
            {k for f in table for k in f.checkpoints} | {v.name for v in families.VAES.values()} |
            set(families.VAES))


def test_pipeline_and_nodes_name_no_family():
    """Family-free: no string in pipeline.py or a node module is a family, VAE or checkpoint-kind name, so no
    code there can compare against one (the count the family-table issue asked to bring to zero)."""
    names = _names()
    files = [os.path.join(REPO_ROOT, "models", "pipeline.py")] + [
        os.path.join(REPO_ROOT, "nodes", f) for f in sorted(os.listdir(os.path.join(REPO_ROOT, "nodes")))
        if f.endswith(".py")]
    found = []
    for path in files:
        with open(path) as fh:
            tree = ast.parse(fh.read())
        found += [(os.path.basename(path), node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]
    assert not found, f"family names outside the table: {found}"


def test_vae_network_answers_its_own_questions():
    """What pipeline.VideoVAE asks every VAE network, present on each class the table loads."""
    from comfyui_opensora.models import sd_vae
    from comfyui_opensora.models.cogvideox.vae import CogVideoXVAE
    from comfyui_opensora.models.opensora import dc_ae, hunyuan_vae, vae_v1_2

    for cls in (vae_v1_2.OpenSoraVAEv12, CogVideoXVAE, sd_vae.VideoAutoencoderKL, hunyuan_vae.HunyuanVAE,
                dc_ae.VideoDCAE):
        for method in ("latent_frames", "check_num_frames", "encoder_runs", "encode_video", "decode_video"):
            assert callable(getattr(cls, method, None)), f"{cls.__name__} lacks {method}"
