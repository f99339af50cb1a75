"""Recipe configuration for the training runner (recipes/prune.py)."""
from .config import Recipe, RecipeError, RunError, default_export_name, load_recipe, parse_overrides, recipe_to_dict

__all__ = ["Recipe", "RecipeError", "RunError", "default_export_name", "load_recipe", "parse_overrides", "recipe_to_dict"]
