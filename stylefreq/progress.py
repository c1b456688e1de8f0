"""Human-readable durations, in the format StyleGAN2-ADA prints them (`1h 02m 03s`)."""


def format_time(seconds: float) -> str:
    """`42s`, `3m 07s`, `2h 05m 09s`, `3d 04h 05m` (rounded to whole seconds)."""
    total = int(round(float(seconds)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f'{days}d {hours:02d}h {minutes:02d}m'
    if hours:
        return f'{hours}h {minutes:02d}m {secs:02d}s'
    if minutes:
        return f'{minutes}m {secs:02d}s'
    return f'{secs}s'
