"""Thin trainer scripts: ``python genrec/trainers/<name>_trainer.py FILE.gin [--split S] [--gin B]...``."""
