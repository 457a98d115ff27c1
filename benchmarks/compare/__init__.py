"""Side by side, in processes of their own: whole training steps of two or more genzoo versions
(commits or folders), a step's profile by kind of work, and two training processes at once."""
