"""Network definitions of the zoo's families, written to match each model's released checkpoint keys."""
