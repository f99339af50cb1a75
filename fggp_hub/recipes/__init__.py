"""Recipe configuration for the training runner (recipes/prune.py)."""
from .config import Recipe, RecipeError, load_recipe, parse_overrides, recipe_to_dict

__all__ = ["Recipe", "RecipeError", "load_recipe", "parse_overrides", "recipe_to_dict"]
