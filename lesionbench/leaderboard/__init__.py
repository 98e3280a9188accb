"""Leaderboard pages and Kaggle-style submission scoring, built from the scorer's results."""
