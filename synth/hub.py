"""Push a run's export (export/sft, rl, all, dpo and the dataset card) to a Hugging Face Hub dataset repo."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from datasets import DatasetDict

from synth.core.errors import ConfigError, ProviderError
from synth.stages.export import front_matter


def push_to_hub(export_dir: Path, repo: str, *, private: bool = False) -> str:
    """Push export/sft, rl, all and dpo as configs of one Hub dataset repo, then the card.

    Fails before uploading anything, with what to do, when offline or without a valid token.
    """
    from datasets import load_from_disk
    from huggingface_hub import HfApi, get_token

    export_dir = Path(export_dir)
    if not (export_dir / "sft").is_dir():
        raise ConfigError(f"{export_dir} holds no export: run `synth export` first")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")  # read now: tests point it elsewhere
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ProviderError("HF_HUB_OFFLINE is set: unset it to push to the Hub")
    token = get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.whoami()
    except Exception as exc:  # connection refused, DNS, proxy, 401: all mean nothing can be pushed
        raise ProviderError(f"cannot use the Hugging Face Hub at {endpoint} ({type(exc).__name__}: {exc}); "
                            "check the network, HF_ENDPOINT and that HF_TOKEN is valid") from None
    pushed: dict[str, list[str]] = {}
    for name in ("sft", "rl", "all", "dpo"):
        if not (export_dir / name).is_dir():
            continue  # an export written before all/ and dpo/ existed
        data = load_from_disk(str(export_dir / name))
        data = DatasetDict({split: ds for split, ds in data.items() if len(ds)})
        if data:
            data.push_to_hub(repo, config_name=name, token=token, private=private)
            pushed[name] = list(data)
    # Our card replaces the generated one; its configs point at where push_to_hub put the data.
    card = (export_dir / "README.md").read_text()
    body = card.split("\n---\n", 1)[1] if card.startswith("---\n") else card
    header = front_matter(yaml.safe_load(card.split("---\n")[1]).get("license", "other"), pushed, "{config}/{split}-*")
    api.upload_file(path_or_fileobj=f"---\n{header}---\n{body}".encode(), path_in_repo="README.md", repo_id=repo,
                    repo_type="dataset", token=token)
    return f"{endpoint}/datasets/{repo}"
