-- Active users with their account's name.
select
    u.user_id,
    u.email,
    u.first_name,
    u.last_name,
    u.plan,
    u.ltv,
    u.account_id,
    a.name as account_name,
    u.signup_at,
    u.updated_at,
    u.last_login_city
from {{ ref('raw_users') }} as u
left join {{ ref('raw_accounts') }} as a using (account_id)
where u.is_active
