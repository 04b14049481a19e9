"""Text prompts for CLIP classifiers: named template sets and class-name cleanup.

A prompt set is a tuple of ``str.format`` templates with one ``{}`` for the class name. The CLIP
trainable's ``prompts`` key names a set here or gives one custom template (``"a doodle of a {}."``).
Class embeddings of a multi-template set are the mean of the per-template unit embeddings,
renormalised (the CLIP paper's prompt ensembling).
"""

from __future__ import annotations

import re

# The 80 templates of the CLIP paper's ImageNet evaluation (as in open_clip's OPENAI_IMAGENET_TEMPLATES,
# which ships them as lambdas; plain strings here so they can be hashed and written to meta.json).
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# Templates for line drawings: what a sketch of a class looks like to a caption writer.
SKETCH_TEMPLATES: tuple[str, ...] = (
    "a sketch of a {}.",
    "a sketch of the {}.",
    "a pencil sketch of a {}.",
    "a black and white sketch of a {}.",
    "a rough sketch of a {}.",
    "a simple sketch of a {}.",
    "a hand-drawn sketch of a {}.",
    "a line drawing of a {}.",
    "a drawing of a {}.",
    "a drawing of the {}.",
    "a doodle of a {}.",
    "a doodle of the {}.",
    "an outline drawing of a {}.",
    "a black ink drawing of a {}.",
    "a child's drawing of a {}.",
    "a cartoon {}.",
)

PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "single": ("a sketch of a {}.",),
    "sketch": SKETCH_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
    "photo": ("a photo of a {}.",),
}


def prompt_templates(prompts: str) -> tuple[str, ...]:
    """The templates a ``prompts`` config value stands for.

    Args:
        prompts: A set name from :data:`PROMPT_SETS`, or one template containing ``{}``.

    Returns:
        One or more ``str.format`` templates.

    Raises:
        ValueError: Neither a known set nor a template with exactly one ``{}``.
    """
    if prompts in PROMPT_SETS:
        return PROMPT_SETS[prompts]
    if isinstance(prompts, str) and prompts.count("{}") == 1:
        return (prompts,)
    raise ValueError(
        f"prompts={prompts!r} is neither a prompt set ({sorted(PROMPT_SETS)}) "
        "nor one template with a single '{}' for the class name, e.g. 'a doodle of a {}.'"
    )


def class_text(class_name: str) -> str:
    """A class name as it reads in a sentence: ``"hot_air-balloon"`` -> ``"hot air balloon"``."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", str(class_name))).strip()


def class_prompts(templates: tuple[str, ...], class_name: str) -> list[str]:
    """Every template filled with the cleaned class name."""
    text = class_text(class_name)
    return [t.format(text) for t in templates]
