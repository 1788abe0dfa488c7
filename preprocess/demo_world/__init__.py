"""The demo world the quickstart trains on, written by preprocess/make_demo_data.py: scenes.py (shapes,
rendering, phrases, row writing) <- images.py, pairs.py, video.py, audio.py <- ie.py; world.py writes them all."""
