"""placeholder replaced below"""
def add_command(sub):
    p = sub.add_parser("leaderboard", help="(not yet)")
    return lambda args: 2
